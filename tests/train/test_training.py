"""Training end to end on a micro config: the sharded step equals the 1-device step, a SIGKILL'd run resumes
onto the exact trajectory, two processes × 4 devices equal one process × 8, and a short run learns.

Compiling the GAN step takes ~30-40 s on 2 CPU cores, so the subprocess runs share a persistent compilation cache
and the in-process tests share one module-scoped run where they can."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcodec import config as config_lib
from jaxcodec import quality
from jaxcodec import workdir as workdir_lib
from jaxcodec.train import loop, reports, resume, sharding
from jaxcodec.train import state as state_lib
from jaxcodec.train import step as step_lib
from jaxcodec.train.checkpoint import Checkpointer
from scripts.synthetic_shards import write_synthetic_shards
from tests.conftest import COLLECTIVE_TIMEOUTS
from tests.train.micro import CONTENT_DIM, MICRO, PINNED, SPEAKER_DIM, micro_config

ROOT = Path(__file__).resolve().parents[2]
STEPS = MICRO["train"]["num_steps"]
PINNED_STEPS = 4
# The killed child reaches checkpoint 3 in ~1-2 min on 2 busy cores (warm compile cache); 5 min means it is stuck.
KILL_DEADLINE_SECONDS = 300


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    return write_micro_shards(tmp_path_factory.mktemp("shards"))


def write_micro_shards(out: Path) -> Path:
    """40 utterances of harmonic bursts with random 'teacher' features (32 train, 8 valid), written with the shard
    writer."""
    return write_synthetic_shards(out, CONTENT_DIM, SPEAKER_DIM)


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax_cache")


def train_command(config_path: Path, shard_dir: Path, workdir: Path, *overrides: str) -> list[str]:
    command = [sys.executable, "-m", "jaxcodec", "train", "--config", str(config_path), "--data", str(shard_dir),
               "--workdir", str(workdir)]
    for item in overrides:
        command += ["--set", item]
    return command


def subprocess_env(cache: Path, devices: int = 8, **extra) -> dict:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {COLLECTIVE_TIMEOUTS}",
               JAX_PLATFORMS="cpu")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_config(path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(MICRO))
    return path


def restore_final(workdir: Path, step: int = STEPS, config=None):
    config = config or micro_config()
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    _, shapes = state_lib.abstract(config)
    abstract = state_lib.abstract_with_shardings(shapes, sharding.state_shardings(shapes, mesh, config.mesh))
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        state, restored_step = checkpointer.restore(abstract, step=step)
    assert restored_step == step
    return jax.device_get(state)


def losses_by_step(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss/total"] for row in rows if "loss/total" in row}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, shard_dir, compile_cache) -> Path:
    """STEPS steps in one go, 1 process × 8 devices, mesh data=8 (the reference for resume and multi-host)."""
    root = tmp_path_factory.mktemp("straight")
    config_path = write_config(root / "micro.yaml")
    done = subprocess.run(train_command(config_path, shard_dir, root / "run"), env=subprocess_env(compile_cache),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run"


def relative_l2(a, b) -> float:
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))


# With PINNED codebooks every frame takes one code per level (perplexity 1), so the acoustic aligner's input has a
# spread of float noise, ~1e-7 of its scale, that differs between meshes; standardising it (model.
# aligner_input_norm) makes that noise the aligner's input (acoustic loss of 1 and 8 devices 0.3 % apart at step 0
# with no variance floor; 18 % apart after the 4 steps with the floor, as its gradient is still 100x: measured).
# Off here; the standardisation is compared under sharding on spread data in tests/models/test_guidance.py.
PINNED_MODEL = {"aligner_input_norm": False}


def pinned_config(**sections) -> config_lib.Config:
    """The micro config with PINNED quantizer decisions and PINNED_STEPS steps (validation and checkpoints at 2
    and 4; two generator-only steps, then two GAN steps): the in-process mesh comparison and the multi-host run
    use the same one."""
    model = {**PINNED_MODEL, **sections.pop("model", {})}
    return micro_config(rvq=PINNED, model=model, train={"num_steps": PINNED_STEPS, "eval_every": 2,
                                                        "checkpoint_every": 2, "disc_warmup_steps": 2}, **sections)


@pytest.fixture(scope="module")
def mesh_runs(shard_dir) -> dict:
    """PINNED_STEPS steps of the pinned config in this process on 1 device, data=8, and data=4 × fsdp=2, from
    the same pipeline batches: name → (initial state, final state, per-step metrics)."""
    from jaxcodec.data import pipeline
    from jaxcodec.data.shards import ShardReader

    reader = ShardReader(shard_dir)
    results = {}
    for name, mesh_shape, param_sharding, devices in (("1", (1, 1), "replicated", jax.devices()[:1]),
                                                      ("data8", (8, 1), "replicated", jax.devices()),
                                                      ("data4_fsdp2", (4, 2), "fsdp", jax.devices())):
        config = pinned_config(mesh={"shape": list(mesh_shape), "param_sharding": param_sharding,
                                     "fsdp_min_size": 512})
        mesh = sharding.make_mesh(config.mesh, devices)
        graphs, state, shardings = state_lib.create(config, mesh)
        if param_sharding == "fsdp":  # the rule really split some parameters
            assert any("fsdp" in str(s.spec) for s in jax.tree.leaves(shardings))
        initial = jax.device_get(state)
        batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(config.mesh))
        iterator = pipeline.make_iterator(pipeline.make_dataset(reader, config))
        step_fns = {adversarial: step_lib.jit_step(graphs, config, shardings, batch_sharding, adversarial)
                    for adversarial in (False, True)}
        step_fn = step_fns[True]
        metrics, batch = [], None
        for step in range(PINNED_STEPS):
            batch = pipeline.global_batch(next(iterator), mesh)
            state, m = step_fns[step_lib.adversarial_at(config, step)](state, batch)
            metrics.append(jax.device_get(m))
        final = jax.device_get(state)
        if name == "1":  # a non-finite batch changes nothing but the step and skip counters (same compiled step)
            poisoned = {**jax.device_get(batch), "wav": np.full(batch["wav"].shape, np.nan, np.float32)}
            after, m = step_fn(state, poisoned)
            after = jax.device_get(after)
            assert int(m["skipped"]) == 1 and int(after["skips"]) == 1 and int(after["skipped"]) == 1
            assert int(after["step"]) == PINNED_STEPS + 1
            for part in ("codec", "disc", "gen_opt", "disc_opt"):
                for x, y in zip(jax.tree.leaves(final[part]), jax.tree.leaves(after[part]), strict=True):
                    np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=part)
        results[name] = (initial, final, metrics)
    return results


def state_differences(reference: dict, state: dict) -> dict[str, float]:
    """Relative L2 difference of each part of a train state."""
    measured = {"codebooks": relative_l2(reference["codec"]["rest"], state["codec"]["rest"])}
    for part in ("codec", "disc"):
        measured[f"{part} params"] = relative_l2(reference[part]["params"], state[part]["params"])
    for part in ("gen_opt", "disc_opt"):
        measured[part] = relative_l2(reference[part], state[part])
    return measured


def loss_differences(reference: list[dict], metrics: list[dict]) -> dict[str, float]:
    """Largest relative difference over the steps, per loss term (the discriminator's from the GAN steps on)."""
    differences = {}
    for key in ("total", "mel", "l1", "commit", "semantic", "acoustic", "disc"):
        pairs = [(a, b) for a, b in zip(reference, metrics, strict=True) if f"loss/{key}" in a]
        assert all(f"loss/{key}" in b for _, b in pairs) and pairs, key
        differences[key] = max(abs(float(b[f"loss/{key}"]) / float(a[f"loss/{key}"]) - 1) for a, b in pairs)
    return differences


# Bounds ~10x above what was measured (largest of data8, data4×fsdp2 and 2 processes × 4: losses 5.7e-6 (commit),
# codebooks 5e-10, codec parameters 2.9e-5, optimizer states 2.1e-5); a sharding error (a missing all-reduce,
# misplaced rows) is O(1). Adam divides by √v: a parameter whose gradient is ~0 moves by float noise.
STATE_BOUNDS = {"codebooks": 1e-7, "codec params": 3e-4, "disc params": 3e-4, "gen_opt": 1e-3, "disc_opt": 1e-3}
LOSS_BOUND = 1e-4


def test_sharded_step_equals_one_device_step(mesh_runs):
    """data=8 and data=4 × fsdp=2 train like 1 device: same parameters, codebooks, optimizer states and losses
    after PINNED_STEPS steps on the same pipeline batches, within float tolerance.

    With the quantizer's data-driven discrete decisions pinned (PINNED: no k-means init, no dead-code
    re-seeding), every difference is a float reduction-order difference. With them, the comparison is
    meaningless at this scale: the untrained encoder maps the batch to a tight cloud (pair distances ~0.01 at
    norm ~0.4), and k-means on it moves up to 16 of 128 assignments under a 1e-7 relative perturbation of its
    input on ONE device (measured), which the 1- and 8-device latents differ by. Both are tested under
    sharding on well-separated data in tests/models/test_quantizer.py."""
    reference_initial, reference_state, reference_metrics = mesh_runs["1"]
    measured = {}
    for name in ("data8", "data4_fsdp2"):
        initial, state, metrics = mesh_runs[name]
        for x, y in zip(jax.tree.leaves(reference_initial), jax.tree.leaves(initial), strict=True):
            # Bitwise for data=8; under fsdp weight-norm magnitudes are reductions over sharded arrays (~1e-7).
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{name} initial state")
        assert int(state["step"]) == PINNED_STEPS
        measured.update({(name, k): v for k, v in loss_differences(reference_metrics, metrics).items()})
        measured.update({(name, k): v for k, v in state_differences(reference_state, state).items()})
    print("relative differences to 1 device:", {f"{n} {k}": f"{v:.1e}" for (n, k), v in measured.items()})
    failures = {f"{n} {k}": v for (n, k), v in measured.items() if v > STATE_BOUNDS.get(k, LOSS_BOUND)}
    assert not failures, (failures, measured)


def kill_at_checkpoint_3(command: list[str], workdir: Path, compile_cache: Path, stderr_path: Path):
    """Starts `command`, SIGKILLs it once checkpoint 3 exists; returns (latest finalized step, stderr's end), or
    (None, stderr with every thread's stack) when the child is still without checkpoint 3 after
    KILL_DEADLINE_SECONDS. stderr goes to a file (a pipe nobody reads can fill and stall the child)."""
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(command, env=subprocess_env(compile_cache, PYTHONFAULTHANDLER=1),
                                stdout=subprocess.DEVNULL, stderr=stderr)
    started = time.monotonic()
    while time.monotonic() < started + KILL_DEADLINE_SECONDS and proc.poll() is None:
        if (workdir / "checkpoints" / "3").is_dir():
            break
        time.sleep(0.005)
    waited = time.monotonic() - started
    stuck = proc.poll() is None and waited >= KILL_DEADLINE_SECONDS
    if proc.poll() is None:
        # SIGABRT makes faulthandler dump every Python thread's stack before the child dies.
        proc.send_signal(signal.SIGABRT if stuck else signal.SIGKILL)
    proc.wait()
    log = stderr_path.read_text(errors="replace")[-6000:]
    if stuck:
        return None, log
    # Seen twice in CI before COLLECTIVE_TIMEOUTS: the child aborted (-6) on a CPU-collective rendezvous timeout.
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, log)
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        killed_at = checkpointer.latest_step()
    assert killed_at is not None and killed_at < STEPS, (f"the run finished before it could be killed "
                                                         f"(killed after {waited:.0f} s)", log)
    return killed_at, log


def test_sigkill_then_resume_continues_the_exact_trajectory(tmp_path, shard_dir, compile_cache, straight_run):
    config_path = write_config(tmp_path / "micro.yaml")
    workdir = tmp_path / "run"
    command = train_command(config_path, shard_dir, workdir)
    killed_at, log = kill_at_checkpoint_3(command, workdir, compile_cache, tmp_path / "killed.stderr")
    if killed_at is None:
        # Stuck (seen once in CI: 600 s without checkpoint 3): report where, then try once more from scratch, so
        # that the resume property is still tested. The stacks go to the warnings summary for diagnosis.
        warnings.warn(f"the killed child was stuck; retrying once. Its stderr ends:\n{log}", stacklevel=1)
        shutil.rmtree(workdir)
        killed_at, log = kill_at_checkpoint_3(command, workdir, compile_cache, tmp_path / "killed-again.stderr")
        assert killed_at is not None, f"stuck twice; the child's stderr ends:\n{log}"
    # Killed among the generator-only steps: the resumed run compiles and switches to the GAN step itself.
    assert killed_at < MICRO["train"]["disc_warmup_steps"], killed_at

    resumed = subprocess.run(command, env=subprocess_env(compile_cache), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {killed_at}" in resumed.stdout

    straight, again = restore_final(straight_run), restore_final(workdir)
    for part in ("codec", "disc", "gen_opt", "disc_opt", "step", "rng", "skipped"):
        for x, y in zip(jax.tree.leaves(straight[part]), jax.tree.leaves(again[part]), strict=True):
            np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=part)  # bitwise, on CPU
    # Same batches in the same order: every logged loss after the resume point is identical.
    reference, resumed_losses = losses_by_step(straight_run), losses_by_step(workdir)
    assert all(resumed_losses[s] == reference[s] for s in range(killed_at, STEPS))


def test_a_short_run_learns(straight_run):
    """The training and validation mel losses fall and no step is skipped.

    Codebook usage does NOT grow at this micro scale (an open weakness, seen at learning rates 1e-3 and 3e-4):
    the untrained micro encoder maps every frame to nearly the same latent (pair distances ~0.01 at norm ~0.4),
    the first real updates move that cloud off the k-means codebooks, and level 1 collapses onto one code for the
    rest of the run: re-seeding a dead code with a batch latent just moves the whole cloud to the new code. The
    information goes through level 2 (up to 9 of 16 codes in use at the end). What is asserted of the quantizer:
    some level uses several codes in the last third, which fails if re-seeding or the EMA update breaks."""
    rows = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if "loss/mel" in row]
    assert [row["step"] for row in train_rows] == list(range(STEPS))
    first, last = train_rows[1], train_rows[-1]  # step 0 has learning rate 0 (warm-up starts at 0)
    assert last["loss/mel"] < 0.7 * first["loss/mel"]
    assert all(row["skipped"] == 0 for row in train_rows)
    valid = [row["valid_mel"] for row in rows if "valid_mel" in row]
    assert len(valid) == 2 and valid[1] < valid[0]
    last_third = train_rows[-STEPS // 3:]
    assert max(max(row["codebook/used_codes_q"]) for row in last_third) >= 4


def micro_command(tmp_path: Path, shard_dir: Path, workdir: Path, **train) -> list[str]:
    """The train command on the micro config with `train` settings changed."""
    import yaml

    config = json.loads(json.dumps(MICRO))
    config["train"].update(train)
    config_path = tmp_path / "micro.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return train_command(config_path, shard_dir, workdir)


def finalized_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def wait_for_logged_step(workdir: Path, proc: subprocess.Popen, step: int, timeout: float = KILL_DEADLINE_SECONDS):
    """Waits until metrics.jsonl has step `step`'s training row (written one step late, so the child is past it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if step in losses_by_step(workdir) if (workdir / "metrics.jsonl").exists() else False:
            return
        time.sleep(0.005)
    raise AssertionError(f"step {step} not logged within {timeout} s (exit status {proc.poll()})")


def test_sigterm_stops_at_the_next_step_with_a_checkpoint_and_the_rerun_continues_exactly(
        tmp_path, shard_dir, compile_cache, straight_run):
    """A preemption notice: SIGTERM at a random step after step 5, with no checkpoint due before the end. The run
    finishes the step in flight, checkpoints it, says so in one line and exits with STOPPED_EXIT_STATUS; the same
    command resumes from that step onto the straight run's trajectory, bitwise."""
    from jaxcodec import stopping

    workdir = tmp_path / "run"
    command = micro_command(tmp_path, shard_dir, workdir, checkpoint_every=1000)
    signal_after = int(np.random.default_rng(25).integers(5, 9))  # a step in 5..8, fixed by the seed
    with open(tmp_path / "stopped.stdout", "wb") as stdout:
        proc = subprocess.Popen(command, env=subprocess_env(compile_cache, PYTHONUNBUFFERED=1), stdout=stdout,
                                stderr=subprocess.STDOUT)
        wait_for_logged_step(workdir, proc, signal_after)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    seconds = time.monotonic() - signalled
    out = (tmp_path / "stopped.stdout").read_text()
    assert proc.returncode == stopping.STOPPED_EXIT_STATUS, out[-3000:]
    [stopped_at] = finalized_steps(workdir)
    # Row `signal_after` is written after step signal_after + 1 was dispatched: the stop comes at most one step on.
    assert signal_after < stopped_at <= signal_after + 3, (signal_after, stopped_at)
    assert out.splitlines()[-1] == (f"stopped by SIGTERM at step {stopped_at} (checkpoint saved); run the same "
                                    f"command to continue"), out[-2000:]
    print(f"SIGTERM after step {signal_after} was logged: stopped at step {stopped_at}, {seconds:.1f} s later")

    resumed = subprocess.run(command, env=subprocess_env(compile_cache), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stopped_at}" in resumed.stdout
    straight, again = restore_final(straight_run), restore_final(workdir)
    for part in ("codec", "disc", "gen_opt", "disc_opt", "step", "rng", "skipped"):
        for x, y in zip(jax.tree.leaves(straight[part]), jax.tree.leaves(again[part]), strict=True):
            np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=part)
    assert losses_by_step(workdir) == losses_by_step(straight_run)


def test_a_second_sigint_during_the_save_exits_at_once_and_keeps_the_previous_checkpoint(
        tmp_path, shard_dir, compile_cache):
    """Ctrl-C twice: the first asks for a checkpoint at the next step, the second (sent as soon as the run says it
    is saving) ends the process at once. The save in flight never becomes a finalized step; the same command
    resumes from the checkpoint before it."""
    workdir = tmp_path / "run"
    command = micro_command(tmp_path, shard_dir, workdir, checkpoint_every=4)
    proc = subprocess.Popen(command, env=subprocess_env(compile_cache, PYTHONUNBUFFERED=1), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_logged_step(workdir, proc, 5)  # past checkpoint 4 ...
        while not (workdir / "checkpoints" / "4").is_dir() and proc.poll() is None:
            time.sleep(0.005)  # ... and its async save finalized (under load it can lag steps behind; seen in CI)
        proc.send_signal(signal.SIGINT)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "saving its checkpoint" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == -signal.SIGINT, out[-3000:]  # ended by the signal itself, not by an exit
    stopping_at = int(next(line for line in lines if "saving its checkpoint" in line).split("step ")[1].split(",")[0])
    assert finalized_steps(workdir) == [4], (finalized_steps(workdir), stopping_at)
    resumed = subprocess.run(command, env=subprocess_env(compile_cache), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 4" in resumed.stdout
    assert finalized_steps(workdir)[-1] == STEPS


def test_minutes_stops_at_a_checkpoint_and_the_same_command_continues(tmp_path, shard_dir, compile_cache,
                                                                      straight_run):
    """`--minutes M`: past M minutes the run validates and checkpoints the step it reached and exits 0; the same
    command (a longer M) continues it to the end, on the straight run's trajectory."""
    config_path = write_config(tmp_path / "micro.yaml")
    workdir = tmp_path / "run"
    env = subprocess_env(compile_cache)
    first = subprocess.run(train_command(config_path, shard_dir, workdir) + ["--minutes", "0.001"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"time budget spent: stopped at step 1 of {STEPS}" in first.stdout
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [1]
    again = subprocess.run(train_command(config_path, shard_dir, workdir) + ["--minutes", "60"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from step 1" in again.stdout
    assert losses_by_step(workdir) == losses_by_step(straight_run)  # every step's loss, bitwise
    refused = subprocess.run(train_command(config_path, shard_dir, tmp_path / "other") + ["--minutes", "0"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "must be a positive number of minutes" in refused.stderr


def test_a_diverging_run_stops_in_one_line_at_its_last_good_checkpoint(tmp_path, shard_dir, compile_cache):
    """A run made to diverge (Adam at a learning rate of 0.3 with no gradient clipping: its loss and gradient norm
    grow by orders of magnitude within a few steps) stops with one line naming the metric, its growth and the last
    good checkpoint;
    checkpoints saved after the growth began are set aside in checkpoints-diverged/, so the same command would
    resume from the good one; metrics.jsonl records why it stopped.

    Logged every step, so the reference is the lowest single step after the warm-up: the loss reaches 630-730×
    it by step 3-4 (train.seed 0 and 1, measured). With 5-step intervals the first interval's median can hold the
    spike itself, and whether the run recovers afterwards depends on the trajectory's details (a change of the
    aligner's input scaling made it recover at step 10)."""
    import re

    workdir = tmp_path / "run"
    command = train_command(write_config(tmp_path / "micro.yaml"), shard_dir, workdir, "optim.learning_rate=0.3",
                            "optim.grad_clip=0", "train.num_steps=40", "train.checkpoint_every=1",
                            "train.log_every=1", "train.eval_every=0", "train.disc_warmup_steps=1000")
    done = subprocess.run(command, env=subprocess_env(compile_cache, devices=1), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("jaxcodec train: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert re.search(r"training diverged: (loss/total|grad_norm/generator) reached", errors[0]), errors[0]
    onset = int(re.search(r"growing since step (\d+)", errors[0]).group(1))
    good = int(re.search(r"the last good checkpoint is step (\d+)", errors[0]).group(1))
    kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    set_aside = sorted(int(p.name) for p in (workdir / "checkpoints-diverged").iterdir())
    # Checkpoint N holds the state after N steps, the state whose loss step N's metrics report: the checkpoints
    # from the onset on are set aside, and the growth is found one step late, so there is at least one.
    assert kept[-1] == good < onset <= min(set_aside) and set_aside[-1] > onset
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["diverged"] == errors[0].removeprefix("jaxcodec train: error: ")


def test_the_workdir_records_its_teachers(straight_run, shard_dir):
    """teachers.json: the shard set's provenance, so a later `jaxcodec eval` report names the teachers."""
    saved = json.loads((straight_run / "teachers.json").read_text())
    assert saved == json.loads((Path(shard_dir) / "index.json").read_text())["provenance"]


def test_validation_and_tensorboard_logs(straight_run):
    """eval_every = 6: validation scores at steps 6 and 12 in metrics.jsonl, WAV samples, and TensorBoard event
    files holding every step's scalars, the validation scores, audio clips and spectrogram images."""
    from tests.train.tb_events import values_by_tag

    rows = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    valid = {row["step"]: row for row in rows if "valid_mel" in row}
    assert sorted(valid) == [6, 12]
    for row in valid.values():
        assert np.isfinite(row["valid_mel"]) and row["valid_l1"] > 0
        # PESQ on 8 crops when the eval extra is installed; a crop PESQ cannot score is counted, never a number.
        if quality.pesq_available():
            assert row.get("valid_pesq_skipped", 0) == 8 or 1.0 <= row["valid_pesq"] <= 4.65
        if quality.stoi_available():  # STOI on the same crops
            assert -1.0 <= row["valid_stoi"] <= 1.0
    for step in (6, 12):
        names = sorted(p.name for p in (straight_run / "samples" / f"{step:08d}").iterdir())
        assert names == ["original_0.wav", "original_1.wav", "reconstruction_0.wav", "reconstruction_1.wav"]
    found = values_by_tag(straight_run / "tensorboard")
    assert [s for s, _ in found["loss/total"]] == list(range(STEPS))
    assert [v for _, v in found["loss/total"]] == pytest.approx([losses_by_step(straight_run)[s] for s in range(STEPS)])
    assert [s for s, _ in found["valid_mel"]] == [6, 12]
    assert len(found["codebook/perplexity/level_1"]) == STEPS
    assert [s for s, _ in found["valid/clip_1/spectrogram"]] == [6, 12]
    (_, clip), _ = found["valid/clip_0/reconstruction"]
    assert clip.ndim == 1 and len(clip) > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def multihost_run(tmp_path_factory, shard_dir, compile_cache) -> Path:
    """The pinned run as 2 processes × 4 CPU devices joined by jax.distributed (gloo collectives, coordinator
    on localhost), through the CLI, in two sittings: SIGTERM to process 1 alone, as soon as it is up, stops both
    processes at the same step with a checkpoint (JAX's preemption sync point); the same commands then finish it."""
    import yaml

    from jaxcodec import stopping

    root = tmp_path_factory.mktemp("multihost")
    config_path = root / "pinned.yaml"
    config_path.write_text(yaml.safe_dump(config_lib.to_dict(pinned_config())))

    def start(port: int) -> list[subprocess.Popen]:
        return [subprocess.Popen(train_command(config_path, shard_dir, root / "run"),
                                 env=subprocess_env(compile_cache, devices=4, PYTHONUNBUFFERED=1, PYTHONFAULTHANDLER=1,
                                                    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                    JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]

    procs = start(free_port())
    first_line = procs[1].stdout.readline()  # printed after jax.distributed is up (and its SIGTERM notifier)
    procs[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=900) for p in procs]
    statuses = [p.returncode for p in procs]
    assert statuses == [stopping.STOPPED_EXIT_STATUS] * 2, (first_line, statuses, [e[-3000:] for _, e in outputs])
    stopped = [line for line in outputs[0][0].splitlines() if line.startswith("stopped by")]
    assert len(stopped) == 1 and "(checkpoint saved); run the same command to continue" in stopped[0], outputs[0][0]
    stopped_at = int(stopped[0].split(" at step ")[1].split()[0])
    assert finalized_steps(root / "run") == [stopped_at] and 0 < stopped_at < PINNED_STEPS, stopped[0]
    # Both processes saved that step (orbax keeps one data-iterator state per process).
    data_files = sorted(p.name for p in (root / "run" / "checkpoints" / str(stopped_at)).rglob("process_*.json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"], data_files

    procs = start(free_port())
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [(out[-1500:], err[-3000:]) for out, err in outputs]
    assert f"resumed from step {stopped_at}" in outputs[0][0], outputs[0][0]
    return root / "run"


def test_two_processes_of_four_devices_train_like_one_process_of_eight(multihost_run, mesh_runs):
    """The 2 × 4 run (each process reading its half of every batch) against the same steps on 8 devices in
    one process: same losses, and the same final parameters, codebooks and optimizer states."""
    # Both processes wrote each checkpoint (orbax keeps one data-iterator state per process) ...
    data_files = sorted(p.name for p in (multihost_run / "checkpoints" / str(PINNED_STEPS)).rglob("process_*.json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"], data_files
    # ... only process 0 logged (one line per step and validation) ...
    rows = [json.loads(line) for line in (multihost_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 2, 3, 4]
    assert all(np.isfinite(r["valid_mel"]) for r in rows if "valid_mel" in r)
    # ... and the run is the 8-device run, to float tolerance (the cross-process all-reduce sums in another order).
    _, single, single_metrics = mesh_runs["data8"]
    multi_metrics = [r for r in rows if "loss/total" in r]
    measured = loss_differences(single_metrics, multi_metrics)
    measured.update(state_differences(single, restore_final(multihost_run, PINNED_STEPS, pinned_config())))
    print("2 × 4 vs 1 × 8 relative differences:", {k: f"{v:.1e}" for k, v in measured.items()})
    failures = {k: v for k, v in measured.items() if v > STATE_BOUNDS.get(k, LOSS_BOUND)}
    assert not failures, (failures, measured)


def test_resume_refuses_a_shape_changing_config(tmp_path, straight_run):
    saved = json.loads((straight_run / "config.json").read_text())
    with pytest.raises(loop.TrainingError, match=r"another model.dimension \(model.dimension: 16 → 32\)"):
        resume.check_resumable(saved, micro_config(model={"dimension": 32}))
    # `train` compares the config as resolved against the shards (the acoustic τ filled in), as saved.
    resolved = micro_config(optim={"learning_rate": 5e-4},
                            loss={"acoustic_temperature": saved["loss"]["acoustic_temperature"]})
    assert resume.check_resumable(saved, resolved) == ["optim.learning_rate"]
    assert resume.check_resumable(saved, micro_config()) == ["loss.acoustic_temperature"]  # unresolved: it shows


def test_load_the_trained_codec_as_a_tokenizer(straight_run):
    """jaxcodec.load(W): the latest or best checkpoint's codec, numpy in and out; its tokens are the restored
    training state's own (codec.encode on the exact length), bucketing changes none of the frames checked."""
    import jaxcodec

    tokenizer = jaxcodec.load(straight_run)
    assert tokenizer.step == STEPS and (tokenizer.n_q, tokenizer.codebook_size) == (2, 16)
    rows = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    scores = {row["step"]: row["valid_mel"] for row in rows if "valid_mel" in row}
    assert jaxcodec.load(straight_run, "best").step == min(scores, key=scores.get)

    rng = np.random.default_rng(5)
    t = np.arange(7_000) / 16_000
    wav = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    codes = tokenizer.encode(wav)
    assert codes.shape == (2, -(-7_000 // 320)) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 16
    assert tokenizer.encode(np.stack([wav, wav])).shape == (2, 2, codes.shape[1])
    assert tokenizer.encode(wav, n_q=1).shape == (1, codes.shape[1])
    assert tokenizer.decode(codes).shape == (codes.shape[1] * 320,)
    assert tokenizer.reconstruct(wav).shape == wav.shape

    # The restored training state's codec on the exact length gives the same tokens (away from the padded end).
    from flax import nnx

    state = restore_final(straight_run)
    codec = state_lib.merge_codec(state_lib.abstract(micro_config())[0], state)
    exact = np.asarray(nnx.jit(lambda m, w: m.encode(w))(codec, wav[None]))[0]
    assert np.array_equal(exact[:, :-2], codes[:, :-2])
    with pytest.raises(ValueError, match="codes must be in 0..15"):
        tokenizer.decode(codes + 16)
    with pytest.raises(ValueError, match="NaN or Inf"):
        tokenizer.encode(np.full(400, np.nan, np.float32))
    with pytest.raises(FileNotFoundError, match="no such training workdir"):
        jaxcodec.load(straight_run / "nothing-here")


def test_fine_tuning_an_imported_workdir_keeps_its_codebooks(tmp_path, shard_dir):
    """`jaxcodec import` writes a step-0 workdir whose codebooks come from the peer; training it must resume from
    there (step 0 → 1) and update those codebooks by EMA, not replace them by k-means on the first batch."""
    from flax import nnx

    from jaxcodec.models.codec import Codec
    from jaxcodec.train import from_codec

    config = micro_config(train={"num_steps": 1, "eval_every": 0, "checkpoint_every": 1})
    codec = Codec(config, rngs=nnx.Rngs(3))
    imported = np.random.default_rng(3).normal(size=codec.quantizer.embed[...].shape).astype(np.float32)
    codec.quantizer.embed[...] = imported
    codec.quantizer.embed_avg[...] = imported * 10.0
    codec.quantizer.cluster_size[...] = np.full(codec.quantizer.cluster_size[...].shape, 10.0, np.float32)
    codec.quantizer.initialized[...] = np.asarray(True)
    from_codec.write_workdir(codec, config, tmp_path / "W", {"peer": "test"})
    loop.train(config, shard_dir, tmp_path / "W", log=lambda *_: None)
    state = restore_final(tmp_path / "W", step=1, config=config)
    embed = np.asarray(state["codec"]["rest"]["quantizer"]["embed"])
    # One EMA step moves the codes the batch used and leaves the others within Laplace smoothing's rounding;
    # k-means would have replaced every code by a mean of latents (a relative change of order 1).
    change = np.linalg.norm(embed - imported, axis=-1) / np.linalg.norm(imported, axis=-1)
    assert np.median(change) < 1e-3, np.median(change)
    assert change.max() > 1e-2  # and the used codes did move
    assert bool(np.asarray(state["codec"]["rest"]["quantizer"]["initialized"]))


def test_resume_on_another_shard_set_is_refused_unless_allowed(tmp_path, shard_dir):
    """Issue 18 #4: the workdir records its shard set (data.json: the shards' checksums and the path); `train`
    on a workdir with a checkpoint and another --data refuses, naming both, before anything is restored or
    compiled; --allow-new-data continues and records the new set."""
    from jaxcodec.data.shards import ShardReader

    other = write_synthetic_shards(tmp_path / "other", CONTENT_DIM, SPEAKER_DIM, utterances=16, seed=1)
    workdir = tmp_path / "run"
    resume.check_data(workdir, ShardReader(shard_dir), resuming=False)  # what a first start records
    with Checkpointer(workdir / "checkpoints", async_save=False) as checkpointer:
        checkpointer.save(1, {"x": np.zeros(1, np.float32)})  # any checkpoint: the refusal comes before restoring
    with pytest.raises(loop.TrainingError, match=rf"{workdir} was trained on the shards in {shard_dir.resolve()}; "
                                                 rf"--data {other.resolve()} holds other shards \(or the set was "
                                                 rf"recalibrated\): pass --allow-new-data"):
        loop.train(micro_config(), other, workdir, log=lambda *_: None)
    logged = []
    resume.check_data(workdir, ShardReader(other), resuming=True, allow_new=True, log=logged.append)
    assert logged == [f"continuing on new data: {other.resolve()} (was {shard_dir.resolve()})"]
    assert json.loads((workdir / workdir_lib.DATA_FILE).read_text())["path"] == str(other.resolve())
    resume.check_data(workdir, ShardReader(other), resuming=True)  # now the recorded set: accepted


def test_resume_drops_a_cut_last_metrics_line_and_names_a_bad_one(tmp_path):
    """Issue 18 #5: a run killed while writing metrics.jsonl leaves its last line cut short; every resume failed
    on it ("Expecting ',' delimiter", no file named). The cut line is dropped with a warning naming the file; an
    invalid line elsewhere is an error naming the file and line."""
    path = tmp_path / "metrics.jsonl"
    good = [json.dumps({"step": 0, "loss/total": 1.0}), json.dumps({"step": 1, "loss/total": 0.9})]
    path.write_text("\n".join(good) + '\n{"step": 2, "loss/tot')
    logged = []
    reports.Logs(tmp_path, 2, logged.append).close()
    assert logged == [f"warning: {path}: line 3 is incomplete (a run stopped while writing it); dropped"]
    assert path.read_text() == "\n".join(good) + "\n"
    path.write_text(good[0] + "\n{oops\n" + good[1] + "\n")
    with pytest.raises(workdir_lib.MetricsFileError, match=rf"{path}: line 2 is not a JSON object"):
        reports.Logs(tmp_path, 2, logged.append)
