"""A small process supervisor: prefixed output, restarts with backoff, orderly stop on signals."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

_COLOURS = (36, 33, 35, 32, 34, 31)
_PR_SET_PDEATHSIG = 1


class ShutdownRequested(Exception):
    """A stop signal arrived while the platform was still starting."""


def death_signal_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM if we die without stopping it (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: dlopen after fork is unsafe
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # we died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass(frozen=True)
class ChildSpec:
    """How to start one supervised child."""

    name: str
    argv: list[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None
    restart_at: float | None = None
    restarts: deque[float] = field(default_factory=deque)


class Supervisor:
    """Runs children in their own process groups and stops them, then cleanups, on a signal."""

    def __init__(
        self,
        out: TextIO | None = None,
        stop_timeout: float = 20.0,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        backoff: float = 1.0,
        backoff_max: float = 15.0,
        escalate_on: frozenset[int] = frozenset({signal.SIGINT}),
        escalate_after: float = 0.5,
    ) -> None:
        self.out = out or sys.stdout
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.backoff = backoff
        self.backoff_max = backoff_max
        # Which repeated signal means "kill now", and how long after the first stop signal it
        # must come. A process manager's or `timeout`'s SIGTERM to our process group arrives
        # twice within milliseconds (once directly, once forwarded by make): that is one request
        # for an orderly stop. A person's second Ctrl-C comes later and means "now".
        self.escalate_on = escalate_on
        self.escalate_after = escalate_after
        self._children: list[_Child] = []
        self._cleanups: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._colour = bool(getattr(self.out, "isatty", lambda: False)())
        self._width = 10
        # Signal handlers only set these flags: taking a lock inside a handler can deadlock.
        self._stop_reason: str | None = None
        self._first_signal_at: float | None = None
        self._ignored_signals = 0
        self._force = False
        self._exit_code = 0
        self._shut_down = False

    # --- output ---------------------------------------------------------------------------------

    def log(self, message: str, name: str = "standalone") -> None:
        """Write one prefixed line per line of message to our output."""
        prefix = f"{name:<{self._width}} |"
        if self._colour:
            colour = _COLOURS[sum(map(ord, name)) % len(_COLOURS)]
            prefix = f"\033[{colour}m{prefix}\033[0m"
        text = "".join(f"{prefix} {line}\n" for line in message.splitlines() or [""])
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.out.write(text)
            self.out.flush()

    def _pump(self, name: str, stream: IO[bytes], sink: list[bytes] | None = None) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in iter(stream.readline, b""):
                if sink is not None:
                    sink.append(raw)
                else:
                    self.log(raw.decode("utf-8", "replace").rstrip("\r\n"), name)
        stream.close()

    def _start_pump(
        self, name: str, stream: IO[bytes], sink: list[bytes] | None = None
    ) -> threading.Thread:
        thread = threading.Thread(target=self._pump, args=(name, stream, sink), daemon=True)
        thread.start()
        return thread

    # --- signals and cleanups -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Turn SIGINT and SIGTERM into an orderly stop; a later second Ctrl-C kills at once."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self._first_signal_at is None:
            self._first_signal_at = now
            self._stop_reason = self._stop_reason or f"received {signal.Signals(signum).name}"
        elif signum in self.escalate_on and now - self._first_signal_at >= self.escalate_after:
            self._force = True
        else:
            self._ignored_signals += 1  # a duplicate of the stop request already under way

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop_reason is not None

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Stop everything as if signalled, ending with exit_code."""
        self._exit_code = self._exit_code or exit_code
        self._stop_reason = self._stop_reason or reason

    def check_stop(self) -> None:
        """Raise ShutdownRequested if a stop was requested (used between start-up steps)."""
        if self._stop_reason is not None:
            raise ShutdownRequested(self._stop_reason)

    def add_cleanup(self, name: str, func: Callable[[], None]) -> None:
        """Call func after the children stopped (cleanups run last-added first)."""
        self._cleanups.append((name, func))

    # --- children -------------------------------------------------------------------------------

    def _popen(self, spec: ChildSpec, stderr: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            spec.argv,
            env=dict(spec.env) if spec.env is not None else None,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            process_group=0,  # signals from the terminal reach us only; we stop children in order
            preexec_fn=death_signal_preexec(),
        )

    def _spawn(self, child: _Child) -> None:
        child.proc = self._popen(child.spec, subprocess.STDOUT)
        assert child.proc.stdout is not None
        child.pump = self._start_pump(child.spec.name, child.proc.stdout)
        child.restart_at = None
        self.log(f"started {child.spec.name} (pid {child.proc.pid}): {' '.join(child.spec.argv)}")

    def start(self, spec: ChildSpec) -> None:
        """Start a supervised child now."""
        self._width = max(self._width, len(spec.name))
        child = _Child(spec)
        self._children.append(child)
        self._spawn(child)

    def run_once(
        self, spec: ChildSpec, capture_stdout: bool = False, timeout: float = 600
    ) -> tuple[int, str]:
        """Run a one-off command to completion; return its exit code and (if captured) stdout."""
        proc = self._popen(spec, subprocess.PIPE if capture_stdout else subprocess.STDOUT)
        captured: list[bytes] = []
        assert proc.stdout is not None
        pumps = [self._start_pump(spec.name, proc.stdout, captured if capture_stdout else None)]
        if capture_stdout:
            assert proc.stderr is not None
            pumps.append(self._start_pump(spec.name, proc.stderr))
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                self.check_stop()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{spec.name} did not finish in {timeout:.0f}s")
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                self._kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._kill_group(proc, signal.SIGKILL)
                    proc.wait()
            for pump in pumps:
                pump.join(5)
        return proc.returncode, b"".join(captured).decode("utf-8", "replace")

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)

    def _on_exit(self, child: _Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        self._kill_group(child.proc, signal.SIGKILL)  # no orphan of a dead leader keeps running
        child.proc = None
        if self.stopping:
            return
        while child.restarts and now - child.restarts[0] > self.restart_window:
            child.restarts.popleft()
        if len(child.restarts) >= self.max_restarts:
            self.log(
                f"{child.spec.name} exited with code {code} and was restarted "
                f"{len(child.restarts)} times in {self.restart_window:.0f}s; giving up"
            )
            self.request_stop(f"{child.spec.name} keeps failing", exit_code=1)
            return
        delay = min(self.backoff * 2 ** len(child.restarts), self.backoff_max)
        self.log(f"{child.spec.name} exited unexpectedly with code {code}; restart in {delay:g}s")
        child.restarts.append(now)
        child.restart_at = now + delay

    def run(self) -> int:
        """Supervise until signalled (exit 0) or a child restarts too often (exit 1)."""
        while not self.stopping:
            now = time.monotonic()
            for child in self._children:
                if child.proc is not None and child.proc.poll() is not None:
                    self._on_exit(child, now)
                elif child.proc is None and now >= (child.restart_at or float("inf")):
                    self._spawn(child)
            time.sleep(0.2)
        self.shutdown()
        return self._exit_code

    def _stop_children(self) -> None:
        alive = [c for c in self._children if c.proc is not None and c.proc.poll() is None]
        for child in alive:
            assert child.proc is not None
            self.log(f"stopping {child.spec.name} (pid {child.proc.pid})")
            self._kill_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        ignored = 0
        while time.monotonic() < deadline and not self._force:
            if all(c.proc is None or c.proc.poll() is not None for c in alive):
                break
            if self._ignored_signals != ignored:
                ignored = self._ignored_signals
                self.log(f"already stopping (repeated signals ignored: {ignored})")
            time.sleep(0.1)
        for child in self._children:
            if child.proc is None:
                continue
            if child.proc.poll() is None:
                why = "second Ctrl-C" if self._force else f"not stopped in {self.stop_timeout:g}s"
                self.log(f"{child.spec.name}: {why}; killing it")
                self._kill_group(child.proc, signal.SIGKILL)
                child.proc.wait()
            self._kill_group(child.proc, signal.SIGKILL)  # stragglers left in its group
            self.log(f"{child.spec.name} stopped (exit code {child.proc.returncode})")
            if child.pump is not None:
                child.pump.join(2)

    def shutdown(self) -> None:
        """Stop all children (SIGTERM, then SIGKILL after stop_timeout), then run the cleanups."""
        if self._shut_down:
            return
        self._shut_down = True
        self.log(
            f"{self._stop_reason or 'shutting down'}; stopping (grace {self.stop_timeout:g}s,"
            " Ctrl-C again to kill at once)"
        )
        self._stop_children()
        for name, func in reversed(self._cleanups):
            self.log(f"stopping {name}")
            try:
                func()
            except Exception as exc:  # one failed cleanup must not skip the others
                self.log(f"stopping {name} failed: {exc}")
