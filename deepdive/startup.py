"""Ctrl-C while `invoke` starts: one line and exit status 130, never a traceback.

Python turns SIGINT into KeyboardInterrupt from its first moments, and `invoke` spends
its first ~0.15 s importing itself and then tasks.py, where no code of ours could catch
it. So SIGINT is taken over as early as possible: when the interpreter reads its
site-packages, by the .pth file that setup.sh puts in the environment (for the `invoke`
program only, `python -m invoke` included), and again when invoke loads tasks.py (for an
environment set up before that file existed). The .pth file runs this file by its path,
without importing the `deepdive` package, which would tie every program of the
environment to this checkout; so two copies of this module may be loaded, and each
knows the handlers of the other by their module name. Every program of the environment
runs it as it starts, so it imports nothing that is not loaded by then. Until a task's body runs nothing has been
started, so the process says so and ends at once. What is left is the interpreter's own
first ~10 ms, before it reads site-packages: a SIGINT there ends it by Python's rules.

tasks.one_line_errors then hands Ctrl-C to the task (task_starts: Python's own
KeyboardInterrupt, which the task turns into its own one line), and once the task is
over (task_ends) ignores it: the task's output and exit status stand.
Only this module's own handlers are ever replaced, so a SIGINT that was ignored when the
process started (a background job) stays ignored.
"""
import _signal as signal  # not `signal`, which imports enum: milliseconds at every start
import os
import sys

MESSAGE = b"interrupted: nothing was started\n"
PROGRAMS = ("invoke", "inv")


def _exit_at_once(_signum: int, _frame: object) -> None:
    # os.write, not sys.stderr: the signal may have come in the middle of a write to it.
    os.write(2, MESSAGE)
    os._exit(130)


def _after_task(_signum: int, _frame: object) -> None:
    """The task is over and the process about to end with its status: nothing to do."""


def _ours(handler: object) -> bool:
    return getattr(handler, "__module__", None) == __name__


def install() -> None:
    """Take Ctrl-C over, unless something other than Python's default handles it."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_at_once)


def at_startup() -> None:
    """Called from the .pth file as the interpreter starts: install() for invoke only."""
    if _runs_invoke():
        install()


def _runs_invoke() -> bool:
    # While site-packages are read, `python -m invoke` has sys.argv[0] == "-m".
    program = sys.argv[0] if sys.argv else ""
    if program != "-m":
        return os.path.basename(program) in PROGRAMS
    option = next(a for a in sys.orig_argv if a.startswith("-m"))  # "-m" or "-mNAME"
    after = sys.orig_argv[sys.orig_argv.index(option) + 1:]
    return (option[2:] or next(iter(after), "")) == "invoke"


def task_starts() -> None:
    """From here Ctrl-C raises KeyboardInterrupt, for the task to handle."""
    if _ours(signal.getsignal(signal.SIGINT)):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def task_ends() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _after_task)
