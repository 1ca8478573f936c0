"""The stop-on-signal rules of jaxcodec/stopping.py, in process (signals sent to this process, one at a time: a
second one would end the test run, which is the point of it; that is tested on a training child in
tests/train/test_training.py)."""

import os
import signal

import pytest

from jaxcodec import config as config_lib
from jaxcodec import stopping


def test_the_first_signal_asks_for_a_stop_at_the_boundary_and_arms_the_default_action():
    before = signal.getsignal(signal.SIGUSR1)
    with stopping.StopAtBoundary(["SIGUSR1", "SIGUSR2"]) as stop:
        assert not stop.agreed(1) and stop.requested is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested == "SIGUSR1" and stop.agreed(2)
        # A second one of either would now end the process by the kernel's default action.
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR1) is before  # the caller's handlers come back


def test_other_commands_unwind_with_the_signal_named():
    with pytest.raises(stopping.Stopped) as stopped, stopping.raising_on_stop_signals(["SIGUSR2"]):
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(10_000):  # the handler runs between bytecodes, at the latest here
            pass
    assert stopped.value.signal_name == "SIGUSR2"
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


def test_stop_signals_are_checked_when_the_config_loads():
    config = config_lib.from_dict({"train": {"stop_signals": ["SIGTERM", "SIGUSR2"]}})
    assert config.train.stop_signals == ("SIGTERM", "SIGUSR2")
    with pytest.raises(config_lib.ConfigError, match=r"train.stop_signals\[1\] = 'SIGKILL': must be a signal name"):
        config_lib.validate(config_lib.from_dict({"train": {"stop_signals": ["SIGINT", "SIGKILL"]}}))
    with pytest.raises(ValueError, match="unknown signal 'SIGTERN'"):
        stopping.signal_number("SIGTERN")
