"""The GitHub Actions workflows pass actionlint (syntax, keys, expressions, action inputs)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))


def actionlint() -> str:
    """actionlint from requirements.txt (beside this interpreter), else from PATH."""
    for candidate in (Path(sys.executable).parent / "actionlint", shutil.which("actionlint")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("actionlint not found: ./setup.sh installs it with requirements.txt", pytrace=False)


def test_there_is_a_workflow():
    assert [w.name for w in WORKFLOWS] == ["ci.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_workflow_passes_actionlint(workflow):
    res = subprocess.run([actionlint(), "-no-color", str(workflow.relative_to(ROOT))],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
