"""Stopping a long command on request, cleanly: a scheduler's preemption notice (SIGTERM, with a grace period before
SIGKILL; SLURM's `--signal=USR1@90` sends SIGUSR1 ahead of a job's end), a person's Ctrl-C (SIGINT).

Two ways to stop, by what a command can do with the time it is given:
- `StopAtBoundary` (training): the first signal is recorded and the loop stops at its next step boundary, after
  saving a checkpoint of that step through the normal atomic path. Its handler then gives the signals back their
  default action, so a second signal ends the process at once (the kernel ends it; no Python runs): a save in
  flight stays an orbax temporary folder, never a finalized step, and the previous checkpoint is the resume point.
- `raising_on_stop_signals` (the other commands): the signal raises `Stopped` in the main thread, which unwinds
  through the command's cleanup (temporary files removed, locks released) to the CLI's one line.

Either way the process exits with STOPPED_EXIT_STATUS, and the same command continues the work where it can.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Sequence

# sysexits.h EX_TEMPFAIL, "a temporary failure; the user is invited to retry": stopped on request with the work saved,
# the same command continues. A requeue script tests for it (README: Failure behaviour); a second signal instead
# ends the process by that signal (the shell's 128 + its number, e.g. 143 for SIGTERM, 130 for SIGINT).
STOPPED_EXIT_STATUS = 75
DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


class Stopped(Exception):
    """A stop signal arrived during a command that stops by unwinding (`raising_on_stop_signals`)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal_name = name


def signal_number(name: str) -> signal.Signals:
    """The signal called `name` (e.g. "SIGTERM"); ValueError naming the known ones otherwise."""
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {name!r} (e.g. SIGTERM, SIGINT, SIGUSR1, SIGUSR2)") from None


def _in_main_thread() -> bool:
    # Python runs signal handlers in the main thread only, and only the main thread may install them.
    return threading.current_thread() is threading.main_thread()


class StopAtBoundary:
    """While entered: `names` (signal names) request a stop at the next step boundary. `requested` is the first
    signal's name (None before); `agreed(step)`, called by every process once per step, is True at the step where
    all processes stop.

    One process: a stop is agreed at the first boundary after the signal. Several processes (jax.distributed): the
    stop must happen at the same step everywhere, whichever process got the signal, so the agreement is JAX's
    preemption sync point (the coordination service picks the step after the furthest one any process reached).
    Its notifier listens to SIGTERM itself, so SIGTERM is left to it and the other signals are passed on to it as
    a SIGTERM to this process."""

    def __init__(self, names: Sequence[str] = DEFAULT_STOP_SIGNALS, *, processes: int = 1, log=print):
        self.signals = [signal_number(name) for name in names]
        self.processes, self.log = processes, log
        self.requested: str | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._sync = None

    def __enter__(self) -> StopAtBoundary:
        if not _in_main_thread():  # e.g. `train` called from a worker thread: signals stay the host program's
            return self
        handled = self.signals
        if self.processes > 1:
            from jax._src import distributed

            self._sync = distributed.global_state.preemption_sync_manager
            if self._sync is None:
                self.log("warning: JAX's preemption service is off (jax_enable_preemption_service): the processes "
                         "cannot agree on a step to stop at, so stop signals end the run without a checkpoint")
                return self
            handled = [s for s in handled if s != signal.SIGTERM]  # JAX's notifier holds SIGTERM
        for number in handled:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame) -> None:
        if self.requested is None:
            self.requested = signal.Signals(number).name
        for handled in self._previous:  # a second signal ends the process at once, by the kernel
            signal.signal(handled, signal.SIG_DFL)
        if self._sync is not None:  # tell JAX's preemption notifier, which the other processes hear through
            os.kill(os.getpid(), signal.SIGTERM)

    def agreed(self, step: int) -> bool:
        """True when this step is where the run stops (call it once per step, on every process)."""
        if self._sync is not None:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.requested = self.requested or "a stop signal to another process (or SIGTERM)"
                return True
            return False
        return self.requested is not None

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()


@contextlib.contextmanager
def raising_on_stop_signals(names: Sequence[str] = DEFAULT_STOP_SIGNALS) -> Iterator[None]:
    """While entered, `names` raise `Stopped` in the main thread (SIGINT too, instead of KeyboardInterrupt, for one
    message whichever signal it was); a second signal during the unwinding ends the process at once."""
    if not _in_main_thread():
        yield
        return
    numbers = [signal_number(name) for name in names]

    def handle(number: int, frame) -> None:
        for handled in numbers:
            signal.signal(handled, signal.SIG_DFL)
        raise Stopped(signal.Signals(number).name)

    previous = {number: signal.signal(number, handle) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
