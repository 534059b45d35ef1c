"""Inside the vm lab's guest: run pages through the host lab, leave captures in OUT.

    python -m deepdive.vmguest OUT PAGE [PAGE...]

Progress goes to stderr as "progress: ..." lines, which the host relays; each page
leaves OUT/PAGE.json, or OUT/PAGE.error with the one line that explains the failure.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from deepdive import lab, registry
from deepdive.model import DeepDiveError
from deepdive.vmlab import GUEST_READY


def say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    out, names = Path(argv[0]), argv[1:]
    say(GUEST_READY)
    status = 0
    for name in names:
        try:
            outcome = lab.run_host(registry.load(name), progress=lambda l: say(f"progress: {l}"))
        except lab.MissingFeature as exc:
            (out / f"{name}.error").write_text(
                f"page {name} needs {' and '.join(exc.kinds)} links, which neither this machine's "
                f"kernel nor the vm lab's ({exc.kernel}) can create\n")
            status = 1
            continue
        except DeepDiveError as exc:
            (out / f"{name}.error").write_text(f"{exc}\n")
            status = 1
            continue
        capture = outcome.capture
        capture["meta"]["lab"] = "vm"
        (out / f"{name}.json").write_text(json.dumps({"capture": capture, "seconds": outcome.seconds}))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
