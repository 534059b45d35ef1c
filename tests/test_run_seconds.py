"""A capture's meta "seconds": how long the lab ran, rounded, shown by the page's
"Reproduce this page" box; it varies from run to run, so it is never compared."""
from __future__ import annotations

import copy

from deepdive import capture as cap
from deepdive import lab
from deepdive.masking import drift
from test_capture import sample


def result(elapsed: float | None) -> dict:
    s = sample()
    out = {k: s[k] for k in ("page", "title", "steps", "checks")}
    if elapsed is not None:
        out["elapsed"] = elapsed
    return out


def test_the_lab_run_time_is_recorded_rounded_and_at_least_one_second():
    assert lab.with_meta(result(12.6), lab="host")["meta"]["seconds"] == 13
    assert lab.with_meta(result(0.2), lab="vm")["meta"]["seconds"] == 1
    assert "elapsed" not in lab.with_meta(result(3.0), lab="host")
    assert "seconds" not in lab.with_meta(result(None), lab="host")["meta"]


def test_a_different_run_time_is_no_drift_and_no_rewrite(tmp_path):
    first = lab.with_meta(result(3.0), lab="host")
    second = copy.deepcopy(first)
    second["meta"]["seconds"] = 40
    assert drift(first, second) == []
    assert cap.write_if_changed(first, captures=tmp_path)
    assert not cap.write_if_changed(second, captures=tmp_path)


def test_a_capture_without_the_run_time_is_rewritten_with_it(tmp_path):
    old = lab.with_meta(result(None), lab="host")
    assert cap.write_if_changed(old, captures=tmp_path)
    assert cap.write_if_changed(lab.with_meta(result(3.0), lab="host"), captures=tmp_path)
    assert cap.load("demo", tmp_path)["meta"]["seconds"] == 3
