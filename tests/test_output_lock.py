"""Issue 18, defect 1: one run per output (jaxcodec.output_lock). A second holder of a directory is refused in one
line naming the first, also when the first is another process; a killed run's lock is taken over with a warning;
another host's is refused with how to remove it; a job array's processes share a shard set but not a shard; and
`train`, `tokenize`, `encode`, `eval` and `precompute` on a locked output are refused before touching it.
Defect 11: a symlink planted at a temporary name never redirects an atomic write or a shard write."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxcodec import atomic, output_lock
from jaxcodec.commands import main
from jaxcodec.data import shards
from jaxcodec.output_lock import OutputLockError

HOLDER_COMMAND = "jaxcodec train (the test's first run)"
# A child process that holds the lock on argv[1] until its stdin closes.
HOLDER = f"""
import sys
from jaxcodec import output_lock
with output_lock.held(sys.argv[1], command={HOLDER_COMMAND!r}):
    print("held", flush=True)
    sys.stdin.read()
"""
CHILD_TIMEOUT = 30  # seconds: the child only imports a stdlib-only module, then waits


@contextlib.contextmanager
def held_by_child(directory: Path):
    """Yields the child process (running) that holds `directory`'s lock."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert child.stdout.readline() == "held\n"
        yield child
    finally:
        child.stdin.close()
        child.wait(timeout=CHILD_TIMEOUT)


def test_a_second_run_is_refused_in_one_line_naming_the_first(tmp_path):
    with held_by_child(tmp_path / "out") as child:
        with pytest.raises(OutputLockError) as refused:
            with output_lock.held(tmp_path / "out"):
                pass
        message = str(refused.value)
        assert "\n" not in message and str(tmp_path / "out") in message
        assert f"pid {child.pid} on host {socket.gethostname()}" in message and HOLDER_COMMAND in message
    # The same process, twice: refused too.
    with output_lock.held(tmp_path / "out"), pytest.raises(OutputLockError, match=f"pid {os.getpid()}"):
        with output_lock.held(tmp_path / "out"):
            pass


def test_the_lock_says_who_holds_it_and_is_gone_after_the_run(tmp_path):
    with output_lock.held(tmp_path / "new", command="jaxcodec eval") as path:
        holder = json.loads(path.read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        assert holder["command"] == "jaxcodec eval" and holder["started"].endswith("Z")
        assert output_lock.live_holder(path) == holder
        (tmp_path / "new" / "result.txt").write_text("kept")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["result.txt"]  # no lock, no temporaries
    with output_lock.held(tmp_path / "new"):  # free again
        pass
    with output_lock.held(tmp_path / "refused-early"):  # a run that wrote nothing leaves no empty folder
        pass
    assert not (tmp_path / "refused-early").exists()


def test_a_killed_runs_lock_is_taken_over_with_a_warning(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    assert child.stdout.readline() == "held\n"
    child.send_signal(signal.SIGKILL)  # no clean-up: the lock file stays, its flock goes with the process
    child.wait(timeout=CHILD_TIMEOUT)
    child.stdin.close()
    path = tmp_path / output_lock.LOCK_NAME
    assert json.loads(path.read_text())["pid"] == child.pid
    assert output_lock.live_holder(path) is None
    with pytest.warns(UserWarning, match=f"taking over the lock left by pid {child.pid} .*which has ended"):
        with output_lock.held(tmp_path):
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_a_lock_taken_on_another_host_is_refused_with_how_to_remove_it(tmp_path):
    path = tmp_path / output_lock.LOCK_NAME
    text = json.dumps({"host": "gpu-7.example", "pid": 1, "command": "jaxcodec train", "started": "x"})
    path.write_text(text)
    with pytest.raises(OutputLockError) as refused:
        with output_lock.held(tmp_path):
            pass
    message = str(refused.value)
    assert "\n" not in message and "pid 1 on host gpu-7.example" in message and f"delete {path}" in message
    assert path.read_text() == text  # not ours to remove
    # A symlink planted at the lock's name is refused, not followed.
    path.unlink()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path.symlink_to(victim)
    with pytest.raises(OutputLockError, match="cannot be opened as a lock file"):
        with output_lock.held(tmp_path):
            pass
    assert victim.read_text() == "precious"


def test_a_job_arrays_processes_share_a_shard_set_but_not_a_shard(tmp_path):
    with shards.writing(tmp_path, 0), shards.writing(tmp_path, 1):  # two processes of one array
        with pytest.raises(OutputLockError, match="is in use by"):
            with shards.writing(tmp_path, 0):  # the same shard twice
                pass
        with pytest.raises(OutputLockError, match="which writes one of its shards"):
            with shards.writing(tmp_path, None):  # a whole run over a running array
                pass
    with shards.writing(tmp_path, None):
        with pytest.raises(OutputLockError, match="which writes the whole set"):
            with shards.writing(tmp_path, 2):
                pass
    assert list(tmp_path.iterdir()) == []


def _commands(tmp_path: Path, out: Path) -> dict[str, list[str]]:
    missing = str(tmp_path / "never-read")  # refused before any input is looked at
    audio_folder = tmp_path / "audio"
    audio_folder.mkdir()
    sf.write(audio_folder / "a.wav", np.zeros(1600, np.float32), 16_000)
    return {
        "train": ["train", "--data", missing, "--workdir", str(out)],
        "tokenize": ["tokenize", "--manifest", missing, "--checkpoint", missing, "--out", str(out)],
        "encode": ["encode", str(audio_folder), "-o", str(out), "--checkpoint", missing, "--quiet"],
        "eval": ["eval", "--checkpoint", missing, "--manifest", missing, "-o", str(out)],
        "precompute": ["precompute", "--manifest", missing, "--out", str(out), "--no-progress"],
        "demo": ["demo", "--out", str(out), "--corpus", missing],
        "import": ["import", missing, "--from", "encodec", "-o", str(out)],
    }


@pytest.mark.parametrize("command", ["train", "tokenize", "encode", "eval", "precompute", "demo", "import"])
def test_a_command_on_a_locked_output_is_refused_and_touches_nothing(tmp_path, capsys, command):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    argv = _commands(tmp_path, out)[command]
    with held_by_child(out) as child:
        before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
        assert main(argv) == 2
        assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"jaxcodec {command}: error: {out} is in use by ")
    assert f"pid {child.pid}" in err


def _plant_links(target: Path, victim: Path, suffixes: list[str]) -> None:
    """Symlinks to `victim` at the temporary names a write of `target` would use: the old predictable one (the
    pid) and the first random suffix the test makes `atomic` draw."""
    for suffix in [str(os.getpid()), *suffixes]:
        (target.parent / (atomic.tmp_prefix(target.name) + suffix)).symlink_to(victim)


def _drawn(monkeypatch, suffixes: list[str]) -> None:
    draws = iter(suffixes)
    monkeypatch.setattr(atomic, "temporary_suffix", lambda: next(draws), raising=False)


def test_a_symlink_at_a_temporary_name_does_not_redirect_an_atomic_write(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "config.json"
    _plant_links(target, victim, ["planted"])
    _drawn(monkeypatch, ["planted", "fresh"])
    atomic.write_json(target, {"written": True})
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and json.loads(target.read_text()) == {"written": True}
    assert not (tmp_path / (atomic.tmp_prefix(target.name) + "fresh")).exists()


def test_a_symlink_at_a_temporary_name_does_not_redirect_a_shard_write(tmp_path, monkeypatch):
    from array_record.python.array_record_module import ArrayRecordReader

    from tests.data.test_shards import FIELDS, PROVENANCE, SOURCE, make_record

    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    shard = tmp_path / shards.shard_name(0, 1)
    _plant_links(shard, victim, ["planted"])
    _drawn(monkeypatch, ["planted", "fresh", "part"])
    writer = shards.ShardWriter(tmp_path, 0, 1, FIELDS)
    writer.write(make_record(0))
    writer.commit(PROVENANCE, [], SOURCE)
    assert victim.read_bytes() == b"precious"
    assert not shard.is_symlink()
    reader = ArrayRecordReader(str(shard))
    assert reader.num_records() == 1
    reader.close()

