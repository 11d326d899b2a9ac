"""The standalone Supervisor stops real children in order: duplicates of one stop signal (what a
process manager or `timeout` sends to `make run`'s process group) never turn into a SIGKILL; a
later second Ctrl-C or the grace timeout does.

Negative control: ``SCHEDULER_TEST_SUPERVISOR_ESCALATE_ANY=1 pytest tests/unit/test_supervisor.py``
builds the Supervisor as it was before (any second signal, at once, kills): the two tests of
repeated signals then fail, their child killed before it could finish its cleanup.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A child that needs `cleanup` seconds after SIGTERM to finish its work, then says so.
CHILD = textwrap.dedent(
    """
    import os, pathlib, signal, sys, time

    marker, cleanup = pathlib.Path(sys.argv[1]), float(sys.argv[2])
    stop = False

    def on_term(signum, frame):
        global stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    marker.with_suffix(".pid").write_text(str(os.getpid()))
    marker.write_text("ready")
    while not stop:
        time.sleep(0.02)
    time.sleep(cleanup)
    marker.write_text("clean")
    """
)

# The Supervisor as `manage.py standalone` uses it, with one child.
DRIVER = textwrap.dedent(
    """
    import json, signal, sys

    sys.path.insert(0, sys.argv[2])
    from scheduler_app.standalone.supervisor import ChildSpec, Supervisor

    cfg = json.loads(sys.argv[1])
    options = {"stop_timeout": cfg["stop_timeout"]}
    if cfg["escalate_after"] is not None:
        options["escalate_after"] = cfg["escalate_after"]
    if cfg["escalate_any"]:  # the negative control: the behaviour before the fix
        options.update(escalate_on=frozenset({signal.SIGINT, signal.SIGTERM}), escalate_after=0)
    supervisor = Supervisor(**options)
    supervisor.install_signal_handlers()
    supervisor.start(ChildSpec("child", [sys.executable, "-c", cfg["child"], *cfg["child_args"]]))
    sys.exit(supervisor.run())
    """
)


class Driven:
    """A Supervisor in a process of its own (a session leader, as `make run` is in a terminal)."""

    def __init__(self, tmp_path: Path, cleanup: float, stop_timeout: float, escalate_after=None):
        self.marker = tmp_path / "child.state"
        self.log_path = tmp_path / "supervisor.log"
        cfg = {
            "stop_timeout": stop_timeout,
            "escalate_after": escalate_after,
            "escalate_any": os.environ.get("SCHEDULER_TEST_SUPERVISOR_ESCALATE_ANY") == "1",
            "child": CHILD,
            "child_args": [str(self.marker), str(cleanup)],
        }
        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), json.dumps(cfg), str(ROOT)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for(lambda: self.state() == "ready", 30, "the child to start")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def state(self) -> str:
        try:
            return self.marker.read_text()
        except OSError:
            return ""

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.log()}")
            time.sleep(0.01)

    def signal_group(self, signum: int) -> None:
        """What `timeout` or a process manager does: the signal to every process of the group."""
        os.killpg(self.proc.pid, signum)

    def signal_leader(self, signum: int) -> None:
        """What make does on SIGTERM: forward it to its child."""
        self.proc.send_signal(signum)

    def wait_stopping(self) -> None:
        """Until the first signal was handled (two signals before that are one to Python)."""
        self.wait_for(lambda: "; stopping (grace" in self.log(), 10, "the stop to begin")

    def exit_code(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the supervisor did not exit within {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def kill_child(self) -> None:
        """The child runs in a process group of its own: leave nothing of it behind."""
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(self.marker.with_suffix(".pid").read_text()), signal.SIGKILL)


@pytest.fixture
def driven(tmp_path) -> Iterator:
    started: list[Driven] = []

    def start(**options) -> Driven:
        started.append(Driven(tmp_path, **options))
        return started[-1]

    yield start
    for each in started:
        each.kill()
        each.kill_child()


def test_sigterm_to_the_process_group_twice_lets_children_finish(driven):
    platform = driven(cleanup=1.5, stop_timeout=30)
    platform.signal_group(signal.SIGTERM)
    platform.wait_stopping()
    platform.signal_leader(signal.SIGTERM)  # make's forwarded copy, milliseconds later
    platform.signal_leader(signal.SIGTERM)
    assert platform.exit_code(30) == 0, platform.log()
    assert platform.state() == "clean", platform.log()
    log = platform.log()
    assert "child stopped (exit code 0)" in log, log
    assert "killing it" not in log, log
    assert "repeated signals ignored" in log, log


def test_two_quick_ctrl_c_are_one_orderly_stop(driven):
    platform = driven(cleanup=1.5, stop_timeout=30, escalate_after=10)
    platform.signal_leader(signal.SIGINT)
    platform.wait_stopping()
    platform.signal_leader(signal.SIGINT)  # within the debounce: a bounce, not a request
    assert platform.exit_code(30) == 0, platform.log()
    assert platform.state() == "clean", platform.log()
    assert "killing it" not in platform.log(), platform.log()


def test_a_second_ctrl_c_after_the_debounce_kills_at_once(driven):
    platform = driven(cleanup=60, stop_timeout=120, escalate_after=0.3)
    platform.signal_leader(signal.SIGINT)
    platform.wait_stopping()
    time.sleep(0.6)
    stopping = time.monotonic()
    platform.signal_leader(signal.SIGINT)
    assert platform.exit_code(20) == 0, platform.log()
    assert time.monotonic() - stopping < 20  # not the child's 60 s cleanup, not the 120 s grace
    assert platform.state() == "ready", platform.log()  # killed before it finished
    assert "child: second Ctrl-C; killing it" in platform.log(), platform.log()


def test_a_child_that_outlives_the_grace_timeout_is_killed(driven):
    platform = driven(cleanup=60, stop_timeout=1.5)
    platform.signal_leader(signal.SIGTERM)
    assert platform.exit_code(30) == 0, platform.log()
    assert platform.state() == "ready", platform.log()
    assert "child: not stopped in 1.5s; killing it" in platform.log(), platform.log()
