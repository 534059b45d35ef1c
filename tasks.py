"""invoke tasks: `lab` runs pages, `site` builds and serves the site, `slides` lists and exports diagrams and decks,
`vagrant.box` builds a Vagrant box.

Each task is a thin call into deepdive/; a DeepDiveError becomes one line on stderr and
a non-zero exit status, and so does Ctrl-C, at any moment (see deepdive/startup.py).
"""
from __future__ import annotations

from deepdive import startup

startup.install()  # first: until a task's body runs, Ctrl-C is one line and status 130

import functools  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

from invoke import Collection, Context, Exit, task  # noqa: E402

from deepdive.model import DeepDiveError  # noqa: E402


def one_line_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            startup.task_starts()  # inside the try: an interrupt from here on is caught below
            return fn(*args, **kwargs)
        except DeepDiveError as exc:
            from deepdive.text import sanitize_for_terminal
            raise Exit(f"error: {sanitize_for_terminal(str(exc))}", code=1) from None
        except KeyboardInterrupt:
            from deepdive import cli
            raise Exit(cli.interrupted(), code=130) from None
        finally:
            startup.task_ends()
    return wrapper


LAB_HELP = ("where to run: auto (default: host when this kernel has what the page needs, "
            "else vm), host (namespaces on this kernel), vm (a micro-VM with a distro kernel), "
            "vagrant (the host lab in the Vagrantfile's lab VM)")


JOBS_HELP = ("pages at once (default: the cores this process may use); the vm pages are "
             "one job, as they share one boot; 1 runs them one by one")
SHARD_HELP = ("I/N: only the I-th of N parts of the pages, split by name and by the run "
              "time their committed captures record, the same on every machine")


@task(help={"page": "page to run (see lab.pages)", "all": "run every page", "lab": LAB_HELP,
            "jobs": JOBS_HELP, "shard": SHARD_HELP})
@one_line_errors
def run(c: Context, page: str = "", all: bool = False, lab: str = "auto", jobs: str = "",
        shard: str = "") -> None:
    """Build a page's lab, run its steps and checks, write its capture and diagrams."""
    from deepdive import cli, parallel
    cli.run(page or None, all, lab, parallel.parse_jobs(jobs or parallel.default_jobs()), shard)


@task(help={"page": "page to check (default: every page)", "lab": LAB_HELP,
            "jobs": JOBS_HELP, "shard": SHARD_HELP})
@one_line_errors
def check(c: Context, page: str = "", lab: str = "auto", jobs: str = "", shard: str = "") -> None:
    """Re-run pages and compare with the committed captures (volatile fields masked)."""
    from deepdive import cli, parallel
    cli.check(page or None, lab, parallel.parse_jobs(jobs or parallel.default_jobs()), shard)


@task(help={"page": "page to draw (default: every page)"})
@one_line_errors
def draw(c: Context, page: str = "") -> None:
    """Redraw diagrams from the committed captures (no lab needed)."""
    from deepdive import cli
    cli.draw(page or None)


@task(help={"lab": "vagrant: also halt the Vagrant lab VM that a run which is gone brought up"})
@one_line_errors
def clean(c: Context, lab: str = "") -> None:
    """Remove what a crashed lab run left behind (only processes marked as the lab's)."""
    from deepdive import cli
    cli.clean(lab)


@task
@one_line_errors
def pages(c: Context) -> None:
    """List the pages and their titles."""
    from deepdive import cli
    cli.list_pages()


@task(help={"dir": "output directory (default: site/)"})
@one_line_errors
def build(c: Context, dir: str = "") -> None:
    """Build the site from the committed captures (no lab, no root)."""
    from deepdive import site
    site.build(strict=True, site_dir=dir or None)


@task(help={"addr": "address to serve on"})
@one_line_errors
def serve(c: Context, addr: str = "127.0.0.1:8000") -> None:
    """Serve the site on localhost, rebuilding on change."""
    from deepdive import site
    site.serve(addr=addr)


@task
@one_line_errors
def slides(c: Context) -> None:
    """List the 1920x1080 PNG diagrams for slides."""
    from deepdive.capture import DIAGRAMS, ROOT
    for png in sorted(DIAGRAMS.glob("*.png")):
        print(png.relative_to(ROOT))


@task(help={"page": "page to export (repeat for several; default: every page)",
            "dir": "output folder (default: slides/)",
            "pdf": "also print each deck to PDF with chromium (default; --no-pdf skips it)"},
      iterable=["page"])
@one_line_errors
def export(c: Context, page: list[str] | None = None, dir: str = "", pdf: bool = True) -> None:
    """Write diagrams (1920x1080 PNG, SVG) and per-page decks (HTML, PDF) into one folder."""
    from deepdive import slides
    from deepdive.capture import rel_path
    out = slides.export(page or None, Path(dir) if dir else slides.OUT, pdf)
    print(f"slides written to {rel_path(out)}")


@task(help={"repeat": "runs per measurement (default 3)",
            "slow-repeat": "runs of lab.check of every page and of the vm boot (default 1)",
            "vm": "measure the vm lab too (default; --no-vm skips it)",
            "out": "where to write (default benchmarks/RESULTS.md)"})
@one_line_errors
def bench(c: Context, repeat: int = 3, slow_repeat: int = 1, vm: bool = True, out: str = "") -> None:
    """Measure the labs, lab.check, the vm boot, the site build and the slide export; write benchmarks/RESULTS.md."""
    from benchmarks import report
    code = report.main(["--repeat", str(repeat), "--slow-repeat", str(slow_repeat), *([] if vm else ["--no-vm"]),
                        *(["--out", out] if out else [])], prog="invoke bench")
    if code:
        raise Exit(code=code)


@task(name="box", help={"out": "where to write the .box file (default build/deepdive-debian12.box)",
                        "mirror": "Debian mirror URL (default: the one apt uses for bookworm, else deb.debian.org)",
                        "force": "rebuild even when the recipe is unchanged"})
@one_line_errors
def vagrant_box(c: Context, out: str = "", mirror: str = "", force: bool = False) -> None:
    """Build a Debian 12 Vagrant box for vagrant-libvirt from Debian packages and add it (needs root)."""
    from deepdive import vagrantbox
    done = vagrantbox.build(Path(out) if out else vagrantbox.DEFAULT_OUT, mirror, force)
    print(f"{vagrantbox.BOX_NAME}: {done}")


@task(name="e2e")
@one_line_errors
def vagrant_e2e(c: Context) -> None:
    """Run tests/test_vagrant_e2e.py alone: lab.run --page vlan --lab vagrant for real (needs root; about 11 min under emulation)."""
    import subprocess
    import sys
    code = subprocess.run([sys.executable, "-m", "pytest", "-s", "-q", "tests/test_vagrant_e2e.py"],
                          cwd=Path(__file__).resolve().parent).returncode
    if code:
        raise Exit(code=code)


lab_ns = Collection("lab", run, check, draw, clean, pages)
site_ns = Collection("site", build, serve)
slides_ns = Collection("slides")
slides_ns.add_task(slides, name="list", default=True)
slides_ns.add_task(export)
vagrant_ns = Collection("vagrant", vagrant_box, vagrant_e2e)
ns = Collection(lab_ns, site_ns, slides_ns, vagrant_ns, bench)
