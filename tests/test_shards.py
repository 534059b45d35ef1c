"""lab.check --shard I/N and --jobs N: how pages are split and what is refused."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from deepdive import parallel, registry, shards
from deepdive.model import DeepDiveError

NAMES = registry.names()


def _split(count: int) -> list[list[str]]:
    return shards.split(NAMES, count, name=str)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, len(NAMES), len(NAMES) + 3])
def test_shards_are_disjoint_and_cover_every_page(count):
    parts = _split(count)
    assert len(parts) == count
    flat = [n for part in parts for n in part]
    assert sorted(flat) == sorted(NAMES) and len(flat) == len(set(flat))
    assert all(part == [n for n in NAMES if n in part] for part in parts)  # in the pages' order


def test_shards_are_the_same_in_every_process():
    """No hash seed, no clock: another interpreter with another PYTHONHASHSEED agrees."""
    code = ("from deepdive import registry, shards; "
            "print(shards.split(registry.names(), 3, name=str))")
    seen = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}, check=True).stdout
            for seed in ("1", "2", "3")}
    assert seen == {f"{_split(3)}\n"}


def test_shards_balance_the_recorded_run_times():
    weights = {"a": 10.0, "b": 6.0, "c": 5.0, "d": 4.0, "e": 1.0}
    parts = shards.split(list(weights), 2, name=str, weight=weights.__getitem__)
    assert parts == [["a", "d"], ["b", "c", "e"]]  # 14 against 12: longest first, to the least loaded


def test_select_is_one_part_of_split():
    assert [shards.select(NAMES, f"{i}/3", name=str) for i in (1, 2, 3)] == _split(3)


@pytest.mark.parametrize("text", ["0/2", "3/2", "x/y", "1/0", "2", "", "1/2/3", "-1/2", " 1 / 2"])
def test_a_bad_shard_is_one_line(text):
    with pytest.raises(DeepDiveError, match=r"is not I/N with 1 <= I <= N") as err:
        shards.parse(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["0", "-2", "x", "1.5"])
def test_bad_jobs_are_one_line(text):
    with pytest.raises(DeepDiveError, match="is not a positive number"):
        parallel.parse_jobs(text)


def test_jobs_default_to_the_usable_cores():
    import os
    assert parallel.default_jobs() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("argv", [["lab.check", "--shard", "3/2"], ["lab.run", "--all", "--shard", "x/y"],
                                  ["lab.check", "--jobs", "0"]])
def test_the_tasks_refuse_bad_values_in_one_line(argv):
    res = subprocess.run([sys.executable, "-m", "invoke", *argv], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: --"), res.stderr
