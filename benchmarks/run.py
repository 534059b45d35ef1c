"""The benchmark report, as `invoke bench` writes it: benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run.py [--repeat 5] [--slow-repeat 1] [--no-vm] [--out PATH]

See benchmarks/report.py for what it measures; each section's module also runs alone
(benchmarks/floor.py, check.py, vm.py, build.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
