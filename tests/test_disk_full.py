"""A disk that fills during a write: a file-size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write past it
fails with EFBIG like a full disk) on the token-shard, teacher-shard and checkpoint writers. Each must stop with a
clear error, leave nothing half-written where a reader looks, and a rerun without the limit must complete with
the same result as a clean run. (A SIGKILL at any moment of the same writes is tested beside each writer:
tests/teachers/test_precompute.py, tests/train/test_checkpoint.py, tests/train/test_training.py.)"""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxcodec import atomic
from jaxcodec.commands import main
from jaxcodec.data import shards
from tests.test_inference import _manifest, corpus, exported  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]


# Sets the limit, then becomes the command (exec), so the limit applies to nothing but the command under test.
_LIMITED = "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); " \
           "os.execv(sys.argv[2], sys.argv[2:])"


def run(command: list[str], tmp_path: Path, max_bytes: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"))
    if max_bytes:
        command = [sys.executable, "-c", _LIMITED, str(max_bytes), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def records_by_id(out: Path) -> dict[str, dict]:
    with shards.ShardReader(out) as reader:
        return {reader.ids[i]: reader[i] for i in range(len(reader))}


def visible_files(out: Path) -> list[str]:
    """What a reader of the folder sees: everything but dot-named temporaries and locks."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.name.startswith("."))


@pytest.fixture(scope="module")
def tokenize_command(exported, corpus, tmp_path_factory):  # noqa: F811
    """The tokenize command line without --out, and a clean run's output to compare with."""
    root = tmp_path_factory.mktemp("tokenize")
    manifest = _manifest(corpus, root / "manifest.jsonl")
    command = ["tokenize", "--manifest", str(manifest), "--checkpoint", str(exported), "--num-shards", "3"]
    clean_out = root / "clean"
    assert main([*command, "--out", str(clean_out)]) == 0
    return command, clean_out


def assert_stopped_cleanly_and_the_rerun_completes(command: list[str], out: Path, clean_out: Path, err: str,
                                                   reason: tuple[str, ...] = ("too large", "No space")):
    # One line from jaxcodec (the child may also warn that jax could not write its compilation cache).
    lines = [line for line in err.strip().splitlines() if line.startswith("jaxcodec tokenize: ")]
    assert len(lines) == 1 and any(r in lines[0] for r in reason) and "Traceback" not in err, err
    assert not (out / shards.INDEX_NAME).exists()
    for part in out.glob("shard-*.json"):  # whatever was committed is whole
        shard = json.loads(part.read_text())
        assert (out / shard["file"]).stat().st_size == shard["bytes"]
        assert shards.sha256_file(out / shard["file"]) == shard["sha256"]

    assert main([*command, "--out", str(out)]) == 0
    assert visible_files(out) == visible_files(clean_out)
    got, want = records_by_id(out), records_by_id(clean_out)
    assert sorted(got) == sorted(want)
    for utt_id, record in want.items():
        np.testing.assert_array_equal(got[utt_id]["codes"], record["codes"])
    errors, _ = shards.verify(out)
    assert errors == []


def test_tokenize_past_a_file_size_limit_stops_cleanly_and_the_rerun_completes(tokenize_command, tmp_path,
                                                                               capsys):
    """A real kernel limit: ArrayRecord pads a shard to 128 KB, so 600 bytes fails the first shard's data."""
    command, clean_out = tokenize_command
    out = tmp_path / "tokens"
    full = run([sys.executable, "-m", "jaxcodec", *command, "--out", str(out)], tmp_path, max_bytes=600)
    assert full.returncode != 0
    assert "shard-00000-of-00003.array_record failed: write() failed: File too large" in full.stderr
    capsys.readouterr()
    assert_stopped_cleanly_and_the_rerun_completes(command, out, clean_out, full.stderr)


# The later writes, which a per-file limit cannot reach (every shard is larger than its part file and the index):
# the disk fills at the second shard's part file (the first shard committed, the second's data already renamed
# into place) or at the merged index.
@pytest.mark.parametrize("full_at", ["shard-00001-of-00003.json", shards.INDEX_NAME])
def test_tokenize_on_a_disk_that_fills_later_stops_cleanly_and_the_rerun_completes(tokenize_command, tmp_path,
                                                                                   capsys, monkeypatch, full_at):
    command, clean_out = tokenize_command
    out = tmp_path / "tokens"
    write_json = atomic.write_json

    def filling(path, payload):
        if Path(path).name == full_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_json(path, payload)

    monkeypatch.setattr(atomic, "write_json", filling)
    capsys.readouterr()
    assert main([*command, "--out", str(out)]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert full_at in err, err
    assert_stopped_cleanly_and_the_rerun_completes(command, out, clean_out, err)


def test_tokenize_stopped_by_sigterm_keeps_its_finished_shards_and_the_rerun_completes(tokenize_command, tmp_path,
                                                                                       capsys, monkeypatch):
    """A stop signal (here SIGTERM to itself as the second shard's part file is about to be written) ends the
    command with one line and STOPPED_EXIT_STATUS; nothing half-written is visible and the rerun completes."""
    from jaxcodec import stopping

    command, clean_out = tokenize_command
    out = tmp_path / "tokens"
    write_json = atomic.write_json

    def signalled(path, payload):
        if Path(path).name == "shard-00001-of-00003.json":
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises at the next bytecode, before the write
        write_json(path, payload)

    monkeypatch.setattr(atomic, "write_json", signalled)
    capsys.readouterr()
    assert main([*command, "--out", str(out)]) == stopping.STOPPED_EXIT_STATUS
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command's handler is gone with it
    assert (out / "shard-00000-of-00003.json").exists() and not (out / "shard-00001-of-00003.json").exists()
    assert_stopped_cleanly_and_the_rerun_completes(command, out, clean_out, err,
                                                   ("stopped by SIGTERM; the finished shards are kept",))


_SAVE_TWICE = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    import numpy as np
    from jaxcodec.train.checkpoint import Checkpointer
    step, size = int(sys.argv[2]), int(sys.argv[3])
    weights = np.random.default_rng(step).standard_normal(size).astype(np.float32)  # random: no compression
    with Checkpointer(sys.argv[1]) as ckpt:
        ckpt.save(step, {"w": jnp.asarray(weights)})
        ckpt.wait()
    print("SAVED")
""")


def test_checkpoint_save_on_a_full_disk_keeps_the_previous_step(tmp_path):
    """Step 1 is small; step 2 (4 MB of float32) does not fit under the 1 MB limit."""
    directory = tmp_path / "checkpoints"
    save = [sys.executable, "-c", _SAVE_TWICE, str(directory)]
    first = run([*save, "1", "16"], tmp_path)
    assert first.returncode == 0 and "SAVED" in first.stdout, first.stderr[-2000:]
    full = run([*save, "2", str(1 << 20)], tmp_path, max_bytes=1 << 20)
    assert full.returncode != 0 and "SAVED" not in full.stdout
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"jaxcodec.workdir.CheckpointError: saving step 2 in {directory} failed: ")
    assert "File too large" in last, last
    assert not (directory / "2").exists()

    import jax
    import jax.numpy as jnp

    from jaxcodec.train.checkpoint import Checkpointer

    with Checkpointer(directory) as ckpt:
        assert ckpt.all_steps() == [1]
        restored, step = ckpt.restore({"w": jax.ShapeDtypeStruct((16,), jnp.float32)})
        want = np.random.default_rng(1).standard_normal(16).astype(np.float32)
        assert step == 1 and np.array_equal(np.asarray(restored["w"]), want)
    again = run([*save, "2", str(1 << 20)], tmp_path)
    assert again.returncode == 0 and "SAVED" in again.stdout, again.stderr[-2000:]
    with Checkpointer(directory) as ckpt:
        assert ckpt.all_steps() == [1, 2]
