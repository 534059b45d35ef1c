#!/usr/bin/env bash
# Provisions the Vagrantfile's `kind` machine (vagrant up kind): Docker, kind and
# kubectl, and a kind cluster named `deepdive` of three nodes (deepdive-control-plane,
# deepdive-worker, deepdive-worker2) with kind's own CNI disabled and flannel installed
# (VXLAN backend), kube-proxy in the mode DEEPDIVE_KUBE_PROXY_MODE names:
# iptables (default), nftables or ipvs. Runs as root. Needs the internet: it checks that
# first, before it changes anything, and stops with one line if it cannot reach it.
#
# Run again (vagrant provision kind), it leaves an existing cluster as it is; to change
# the mode: kind delete cluster --name deepdive, then provision again.
set -euo pipefail

# Pinned versions. kind has networking.kubeProxyMode "nftables" since v0.23.0, for
# Kubernetes 1.31 and later; v0.32.0's default node image is Kubernetes 1.36.1.
KIND_VERSION=v0.32.0
NODE_IMAGE=kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5
KUBECTL_VERSION=v1.36.1
FLANNEL_VERSION=v0.28.9
# kind's node image carries only the host-local, loopback, ptp and portmap plugins;
# flannel hands each pod to the bridge plugin, mounted into the nodes from here. The
# same release of the CNI plugins as kind's node image.
CNI_PLUGINS_VERSION=v1.9.1

KIND_URL=https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-amd64
KUBECTL_URL=https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl
FLANNEL_URL=https://github.com/flannel-io/flannel/releases/download/$FLANNEL_VERSION/kube-flannel.yml
CNI_URL=https://github.com/containernetworking/plugins/releases/download/$CNI_PLUGINS_VERSION/cni-plugins-linux-amd64-$CNI_PLUGINS_VERSION.tgz
# Where the downloads come from: the node and flannel images, and the pages' agnhost.
# Not the hosts they redirect to (CDNs): the check catches a machine with no way out.
HOSTS=(deb.debian.org kind.sigs.k8s.io dl.k8s.io github.com registry-1.docker.io ghcr.io registry.k8s.io)
CLUSTER=deepdive
CNI_DIR=/opt/deepdive/cni

say() { echo "kind.sh: $*"; }
fail() { echo "kind.sh: $1" >&2; exit "${2:-1}"; }

MODE=${DEEPDIVE_KUBE_PROXY_MODE:-iptables}
case "$MODE" in
  iptables|nftables|ipvs) ;;
  *) fail "DEEPDIVE_KUBE_PROXY_MODE=$MODE is not one of iptables, nftables, ipvs" 2 ;;
esac
[[ $(id -u) -eq 0 ]] || fail "run me as root (Vagrant's shell provisioner does)" 2

# The first step that needs the internet: nothing has been changed yet.
say "needs the internet from here on (Debian packages, kind $KIND_VERSION, kubectl $KUBECTL_VERSION, flannel $FLANNEL_VERSION, the node images); checking that it is reachable"
for host in "${HOSTS[@]}"; do
  if ! timeout 15 bash -c "exec 3<>/dev/tcp/$host/443" 2>/dev/null; then
    fail "needs the internet and cannot reach $host (port 443); nothing was changed"
  fi
done

say "installing Docker and curl (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker.io curl ca-certificates >/dev/null
usermod -aG docker vagrant 2>/dev/null || true

fetch() { curl -fsSL --retry 3 -o "$2" "$1"; }
say "installing kind $KIND_VERSION and kubectl $KUBECTL_VERSION into /usr/local/bin"
fetch "$KIND_URL" /usr/local/bin/kind
fetch "$KUBECTL_URL" /usr/local/bin/kubectl
chmod 0755 /usr/local/bin/kind /usr/local/bin/kubectl
say "fetching the CNI plugins $CNI_PLUGINS_VERSION (flannel's bridge) into $CNI_DIR"
mkdir -p "$CNI_DIR"
fetch "$CNI_URL" "$CNI_DIR/plugins.tgz"
tar -xzf "$CNI_DIR/plugins.tgz" -C "$CNI_DIR" ./bridge
rm "$CNI_DIR/plugins.tgz"

# The kernel modules kube-proxy and flannel use: the nodes share this VM's kernel.
modprobe -a br_netfilter vxlan
if [[ $MODE == ipvs ]]; then
  say "ipvs: deprecated since Kubernetes 1.35 (KEP-5495), still available"
  modprobe -a ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh
fi

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "the cluster $CLUSTER exists already: left as it is (kind delete cluster --name $CLUSTER, then vagrant provision kind, makes a new one)"
else
  say "creating the kind cluster $CLUSTER (kube-proxy mode $MODE, no default CNI)"
  mount_bridge="    extraMounts:
      - hostPath: $CNI_DIR/bridge
        containerPath: /opt/cni/bin/bridge"
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 0s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true
  kubeProxyMode: "$MODE"
  podSubnet: 10.244.0.0/16
nodes:
  - role: control-plane
$mount_bridge
  - role: worker
$mount_bridge
  - role: worker
$mount_bridge
EOF
fi

say "installing flannel $FLANNEL_VERSION (VXLAN backend)"
kubectl apply -f "$FLANNEL_URL"
kubectl wait --for=condition=Ready nodes --all --timeout=600s
# The vagrant user's kubectl talks to the same cluster.
install -d -o vagrant -g vagrant /home/vagrant/.kube
kind get kubeconfig --name "$CLUSTER" > /home/vagrant/.kube/config
chown vagrant:vagrant /home/vagrant/.kube/config
say "ready: vagrant ssh kind, then kubectl get nodes -o wide; docker exec -it $CLUSTER-worker bash opens a node"
