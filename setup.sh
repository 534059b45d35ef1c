#!/usr/bin/env bash
# Set up a checkout on Debian or Ubuntu.
#
#   ./setup.sh         Python environment in .venv: enough to build and serve the site
#                      from the committed captures. No root needed.
#   ./setup.sh --lab   also the system packages the labs and diagrams use, the vm lab's
#                      qemu and distro kernel included (apt-get; through sudo unless run
#                      as root). The Vagrantfile's lab VM is provisioned with this.
#   ./setup.sh --test  --lab's packages and what the tests add: the browser tests' and
#                      PDF decks' Chromium, Node.js and axe-core (npm ci, into
#                      node_modules/), and on Debian what builds and boots the Vagrant box.
#                      .ci/run uses this.
#   ./setup.sh --lab-packages
#                      print --lab's package list for this system, one per line, and
#                      change nothing (invoke vagrant.box installs it into the box).
set -euo pipefail
cd "$(dirname "$0")"

LAB_PACKAGES=(iproute2 iputils-ping tcpdump util-linux mount graphviz python3 python3-venv
              qemu-system-x86 busybox-static
              # cairosvg rasterises the diagrams' glyphs for graphviz's PNG slides
              libcairo2
              # what the kernel-feature probes run (deepdive/features.py)
              nftables iptables ipset conntrack ipvsadm
              # the troubleshooting page's veth statistics
              ethtool
              # the pods pages: CNI's reference plugins (in /usr/lib/cni), a pause
              # process, and what the bash CNI plugin runs
              containernetworking-plugins catatonit jq socat curl
              # the ebpf page: a C program built for BPF (libbpf's headers), loaded with
              # tc, looked at with llvm-objdump and bpftool (below)
              clang llvm libbpf-dev
              # slides.export's PDF decks, printed by headless Chromium (below); the
              # decks' monospace columns are sized for DejaVu Sans Mono (deepdive/slides.py)
              fonts-dejavu-core)
# The vm lab boots the distro's own kernel (for link kinds the running kernel may lack);
# Ubuntu ships bpftool with its kernel tools, Debian as a package of its own.
. /etc/os-release
case "${ID:-debian}" in
  ubuntu) LAB_PACKAGES+=(linux-image-generic linux-tools-common linux-tools-generic) ;;
  *) LAB_PACKAGES+=(linux-image-amd64 bpftool) ;;
esac

TEST_PACKAGES=()
# The browser tests (tests/test_browser.py) and the PDF decks use Debian's chromium
# package; the browser tests want the fonts it recommends. Ubuntu (since 19.10) ships Chromium only as a snap, which this
# script does not install: there, point DEEPDIVE_CHROMIUM at a Chromium or Chrome
# executable, or the browser tests fail with a line saying so.
if [[ "${ID:-debian}" != ubuntu ]]; then TEST_PACKAGES+=(chromium fonts-liberation); fi
# invoke vagrant.box (debootstrap, qemu-img, sfdisk, extlinux) and the vagrant tests
# (tests/test_vagrant_boot.py: libvirtd and virsh, dnsmasq for its network's DHCP), on Debian.
if [[ "${ID:-debian}" != ubuntu ]]; then
  TEST_PACKAGES+=(debootstrap qemu-utils fdisk extlinux
                  vagrant vagrant-libvirt libvirt-daemon-system dnsmasq-base)
fi
# npm installs axe-core for the browser tests. A Node.js from NodeSource brings its own npm and
# conflicts with the distribution's npm package, so that one comes only when none is.
if ! command -v npm >/dev/null; then TEST_PACKAGES+=(nodejs npm); fi

apt_install() {
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

case "${1:-}" in
  "") ;;
  --lab-packages) printf '%s\n' "${LAB_PACKAGES[@]}"; exit 0 ;;
  --lab) apt_install "${LAB_PACKAGES[@]}" ;;
  --test)
    apt_install "${LAB_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
    # axe-core at the version package-lock.json pins, for the browser tests.
    npm ci --no-audit --no-fund --loglevel=error ;;
  *) echo "usage: ./setup.sh [--lab | --test | --lab-packages]" >&2; exit 2 ;;
esac

# The system Python, when there is one, so that a rootless lab run started by any user
# can execute the environment's interpreter.
python=python3
if [[ -x /usr/bin/python3 ]]; then python=/usr/bin/python3; fi

if [[ ! -x .venv/bin/python ]]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian ships ensurepip separately (python3-venv); without root, build the
    # environment without pip and bootstrap pip from PyPI's wheel.
    rm -rf .venv
    "$python" -m venv --without-pip .venv
    .venv/bin/python - <<'PY'
import json, pathlib, subprocess, sys, tempfile, urllib.parse, urllib.request
index = "https://pypi.org/pypi/pip/json"
meta = json.load(urllib.request.urlopen(index))
wheel = next(u for u in meta["urls"] if u["filename"].endswith(".whl"))
with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp, wheel["filename"])
    path.write_bytes(urllib.request.urlopen(urllib.parse.urljoin(index, wheel["url"])).read())
    subprocess.run([sys.executable, f"{path}/pip", "install", "-q", str(path)], check=True)
PY
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
# Ctrl-C while invoke starts up: one line, not a traceback (deepdive/startup.py).
site_packages=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
printf 'import sys; p = "%s"; m = {"__name__": "deepdive.startup"}; exec(compile(open(p).read(), p, "exec"), m); m["at_startup"]()\n' \
  "$PWD/deepdive/startup.py" > "$site_packages/deepdive.pth"
echo "ready: .venv/bin/invoke --list shows the tasks"
