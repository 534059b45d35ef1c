"""Command time limits scale with $DEEPDIVE_SLOWDOWN, which the vm lab sets under TCG."""
import pytest

from deepdive import inlab
from deepdive.model import cmd


@pytest.mark.parametrize("value, factor", [("3", 3.0), ("", 1.0), ("0.5", 1.0), ("fast", 1.0)])
def test_the_factor_comes_from_the_environment_and_is_never_below_one(monkeypatch, value, factor):
    monkeypatch.setenv("DEEPDIVE_SLOWDOWN", value)
    assert inlab._slowdown() == factor


def test_a_commands_limit_is_its_own_times_the_factor(monkeypatch):
    monkeypatch.setattr(inlab, "SLOWDOWN", 8.0)
    assert inlab.limit(cmd("true", timeout=2)) == 16.0


def test_a_slow_command_passes_under_the_factor_and_fails_without(monkeypatch):
    from deepdive.model import Page
    page = Page(name="slow", title="Slow")
    page.step("wait", "Wait", cmd("sleep 0.3", timeout=0.1))
    step = page.step_by_id("wait")
    monkeypatch.setattr(inlab, "SLOWDOWN", 1.0)
    with pytest.raises(inlab.StepFailed):
        inlab.run_step(page, step)
    monkeypatch.setattr(inlab, "SLOWDOWN", 10.0)
    assert inlab.run_step(page, step)[0].rc == 0

