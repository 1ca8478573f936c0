"""Training end to end on a micro config: the sharded step equals the 1-device step, a SIGKILL'd run resumes
onto the exact trajectory, two processes × 4 devices equal one process × 8, and a short run learns.

Compiling the GAN step takes ~30-40 s on 2 CPU cores, so the subprocess runs share a persistent compilation cache
and the in-process tests share one module-scoped run where they can."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcodec import config as config_lib
from jaxcodec.data import shards
from jaxcodec.train import loop, sharding
from jaxcodec.train import state as state_lib
from jaxcodec.train import step as step_lib
from jaxcodec.train.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
HUBERT_DIM, ECAPA_DIM = 8, 4
MICRO = {
    "model": {"n_filters": 4, "dimension": 16, "lstm_layers": 1, "aligner_dim": 16, "aligner_heads": 2,
              "semantic_dim": HUBERT_DIM, "acoustic_dim": ECAPA_DIM},
    "rvq": {"n_q": 2, "codebook_size": 16, "kmeans_iters": 10, "decay": 0.9},
    "disc": {"kinds": ["msstft"], "msstft_filters": 4, "msstft_n_ffts": [128]},
    "loss": {"mel_form": "speechtokenizer"},
    "optim": {"learning_rate": 1e-3, "warmup_steps": 2},
    "data": {"segment_seconds": 0.32, "hubert_layer": "9"},
    "train": {"batch_size": 8, "num_steps": 12, "checkpoint_every": 1, "keep_checkpoints": 12, "eval_every": 0,
              "log_every": 1, "disc_warmup_steps": 2},
}
STEPS = MICRO["train"]["num_steps"]


def micro_config(**sections) -> config_lib.Config:
    mapping = json.loads(json.dumps(MICRO))
    for section, values in sections.items():
        mapping.setdefault(section, {}).update(values)
    return config_lib.from_dict(mapping)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """32 utterances of harmonic bursts with random 'teacher' features, written with the shard writer."""
    out = tmp_path_factory.mktemp("shards")
    fields = {"audio": {"dtype": "int16", "shape": ["samples"]},
              "hubert": {"dtype": "float16", "shape": ["frames", HUBERT_DIM]},
              "ecapa": {"dtype": "float16", "shape": [ECAPA_DIM]}}
    provenance = {"hubert": {"layer": "9", "dim": HUBERT_DIM}, "ecapa": {"dim": ECAPA_DIM}, "sample_rate": 16_000,
                  "hop_length": 320}
    rng = np.random.default_rng(0)
    for index in range(2):
        writer = shards.ShardWriter(out, index, 2, fields)
        for i in range(index, 32, 2):
            n = int(rng.integers(6_000, 16_000))
            t = np.arange(n) / 16_000
            f0 = 100 + 100 * rng.random()
            wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5)) * (0.5 + 0.5 * np.sin(6 * t))
            wav = 0.2 * wav + 0.01 * rng.standard_normal(n)
            frames = -(-n // 320)
            writer.write({"id": f"u{i:03d}", "split": "train", "sample_rate": 16_000, "num_samples": n,
                          "audio": (wav * 20_000).astype(np.int16),
                          "hubert": rng.standard_normal((frames, HUBERT_DIM)).astype(np.float16),
                          "ecapa": rng.standard_normal(ECAPA_DIM).astype(np.float16)})
        writer.commit(provenance, [], {"num_shards": 2})
    shards.merge_index(out)
    return out


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
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_config(path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(MICRO))
    return path


def restore_final(workdir: Path, step: int = STEPS):
    config = micro_config()
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


def test_sharded_step_equals_one_device_step(shard_dir):
    """data=8 and data=4 × fsdp=2 train like 1 device (k-means init + 2 steps on the same batches).

    Initial parameters are equal (born sharded from one seed). After the steps, element-wise equality is
    the wrong bound: the quantizer's argmin decisions can flip on near-ties when the reduction order changes
    (seen at 1e-4 to 3e-3 in this micro config's losses, varying between runs of the 8-device program), and Adam
    turns a near-zero gradient's noise into a full-size update. So the test compares what a sharding error (a
    missing all-reduce, misplaced rows) would change by O(1): each part's parameter update in relative L2, and the
    losses. The codebooks are not compared (see below)."""
    from jaxcodec.data import pipeline
    from jaxcodec.data.shards import ShardReader

    reader = ShardReader(shard_dir)
    results = {}
    for name, mesh_shape, param_sharding, devices in (("1", (1, 1), "replicated", jax.devices()[:1]),
                                                      ("data8", (8, 1), "replicated", jax.devices()),
                                                      ("data4_fsdp2", (4, 2), "fsdp", jax.devices())):
        config = micro_config(mesh={"shape": list(mesh_shape), "param_sharding": param_sharding,
                                    "fsdp_min_size": 512})
        mesh = sharding.make_mesh(config.mesh, devices)
        graphs, state, shardings = state_lib.create(config, mesh)
        if param_sharding == "fsdp":  # the rule really split some parameters
            specs = [s.spec for s in jax.tree.leaves(shardings)]
            assert any("fsdp" in str(spec) for spec in specs)
        initial = jax.device_get(state)
        batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(config.mesh))
        iterator = pipeline.make_iterator(pipeline.make_dataset(reader, config))
        batches = [pipeline.global_batch(next(iterator), mesh) for _ in range(2)]
        state = step_lib.jit_init_codebooks(graphs, config, shardings, batch_sharding)(state, batches[0])
        step_fn = step_lib.jit_step(graphs, config, shardings, batch_sharding)
        metrics = []
        for batch in batches:
            state, m = step_fn(state, batch)
            metrics.append(jax.device_get(m))
        results[name] = (initial, jax.device_get(state), metrics)
        if name == "1":  # a non-finite batch changes nothing but the step and skip counters (same compiled step)
            poisoned = {**jax.device_get(batches[0]), "wav": np.full(batches[0]["wav"].shape, np.nan, np.float32)}
            before = jax.device_get(state)
            after, m = step_fn(state, poisoned)
            after = jax.device_get(after)
            assert int(m["skipped"]) == 1 and int(after["skips"]) == 1 and int(after["skipped"]) == 1
            assert int(after["step"]) == 3
            for part in ("codec", "disc", "gen_opt", "disc_opt"):
                for x, y in zip(jax.tree.leaves(before[part]), jax.tree.leaves(after[part]), strict=True):
                    np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=part)
    reference_initial, reference_state, reference_metrics = results["1"]
    measured = {}
    for name in ("data8", "data4_fsdp2"):
        initial, state, metrics = results[name]
        for x, y in zip(jax.tree.leaves(reference_initial), jax.tree.leaves(initial), strict=True):
            # Bitwise for data=8; under fsdp weight-norm magnitudes are reductions over sharded arrays (~1e-7).
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{name} initial state")
        assert int(state["step"]) == 2
        for key in ("total", "mel", "semantic", "acoustic", "disc"):
            measured[(name, key)] = max(abs(float(b[f"loss/{key}"]) / float(a[f"loss/{key}"]) - 1)
                                        for a, b in zip(reference_metrics, metrics, strict=True))
        for part in ("codec", "disc"):
            ref_update = jax.tree.map(lambda x, y: y - x, reference_initial[part]["params"],
                                      reference_state[part]["params"])
            update = jax.tree.map(lambda x, y: y - x, initial[part]["params"], state[part]["params"])
            measured[(name, f"{part} update")] = relative_l2(ref_update, update)
        measured[(name, "codebooks")] = relative_l2(reference_state["codec"]["rest"], state["codec"]["rest"])
    print("relative differences to 1 device:", {f"{n} {k}": f"{v:.1e}" for (n, k), v in measured.items()})
    # Bounds: reconstruction and discriminator terms move little with a flipped code; the acoustic head sees only
    # level 2 here (n_q = 2), whose small residuals flip codes most (a few % seen); a sharding error is O(1).
    # Codebooks are printed, not bounded: a flipped assignment changes an EMA count, which can flip a dead-code
    # re-seeding decision and replace a whole code vector (25-33 % relative L2 seen here). An open weakness.
    bounds = {"total": 5e-3, "mel": 5e-3, "disc": 5e-3, "semantic": 2e-2, "acoustic": 1e-1, "codec update": 1e-1,
              "disc update": 1e-1}
    failures = {f"{n} {k}": v for (n, k), v in measured.items() if k in bounds and v > bounds[k]}
    assert not failures, failures


def test_sigkill_then_resume_continues_the_exact_trajectory(tmp_path, shard_dir, compile_cache, straight_run):
    config_path = write_config(tmp_path / "micro.yaml")
    workdir = tmp_path / "run"
    command = train_command(config_path, shard_dir, workdir)
    proc = subprocess.Popen(command, env=subprocess_env(compile_cache), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if (workdir / "checkpoints" / "3").is_dir():
            break
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Seen once in CI: the child had already exited before the kill; its stderr says why.
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.read().decode()[-3000:])
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        killed_at = checkpointer.latest_step()
    assert killed_at is not None and killed_at < STEPS, "the run finished before it could be killed"

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
    """The mel loss falls and no step is skipped. Codebook usage does NOT grow steadily at this micro scale: the
    first real updates move the encoder's output off the k-means codebooks and a level collapses onto one code,
    until dead-code re-seeding revives it a few steps later (seen at learning rates 1e-3 and 3e-4; an open
    weakness of the quantizer's dynamics). What is asserted: every level is back in use (≥ 2 codes) at some step
    of the last third, which fails if re-seeding or the EMA update breaks."""
    rows = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if "loss/mel" in row]
    assert [row["step"] for row in train_rows] == list(range(STEPS))
    first, last = train_rows[1], train_rows[-1]  # step 0 has learning rate 0 (warm-up starts at 0)
    assert last["loss/mel"] < 0.7 * first["loss/mel"]
    assert all(row["skipped"] == 0 for row in train_rows)
    last_third = train_rows[-STEPS // 3:]
    for level in range(MICRO["rvq"]["n_q"]):
        assert max(row["codebook/used_codes_q"][level] for row in last_third) >= 2, level


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def multihost_run(tmp_path_factory, shard_dir, compile_cache) -> Path:
    """The same run as `straight_run`, as 2 processes × 4 CPU devices joined by jax.distributed (gloo)."""
    root = tmp_path_factory.mktemp("multihost")
    config_path = write_config(root / "micro.yaml")
    port = free_port()
    procs = [subprocess.Popen(train_command(config_path, shard_dir, root / "run"),
                              env=subprocess_env(compile_cache, devices=4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                 JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return root / "run"


def test_two_processes_of_four_devices_train_like_one_process_of_eight(multihost_run, straight_run):
    # Both processes took part in writing each checkpoint (orbax keeps one data-iterator file per process).
    data_files = sorted(p.name for p in (multihost_run / "checkpoints" / str(STEPS)).rglob("process_*.json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"], data_files
    # Same data, same program: the first steps agree to float tolerance (2e-5 seen). After that the quantizer's
    # code flips and re-seeding (see the xfail below) make the runs drift apart: up to 13 % at step 5 seen; a
    # wrong data slice or a missing all-reduce would already show at step 0.
    single, multi = losses_by_step(straight_run), losses_by_step(multihost_run)
    np.testing.assert_allclose([multi[0], multi[1]], [single[0], single[1]], rtol=1e-3)
    np.testing.assert_allclose([multi[s] for s in range(STEPS)], [single[s] for s in range(STEPS)], rtol=0.25)


@pytest.mark.xfail(strict=False, reason="open: after k-means init + 2 steps the 2-process run's codebook counts "
                   "differ from the 1-process run's by a few frames (in-process 8-device runs match 1 device "
                   "exactly); cause not found yet")
def test_two_processes_of_four_devices_end_with_the_same_parameters(multihost_run, straight_run):
    multi, single = restore_final(multihost_run, step=2), restore_final(straight_run, step=2)
    for part in ("codec", "disc", "gen_opt"):
        for x, y in zip(jax.tree.leaves(single[part]), jax.tree.leaves(multi[part]), strict=True):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6, err_msg=part)


def test_resume_refuses_a_shape_changing_config(tmp_path, straight_run):
    saved = json.loads((straight_run / "config.json").read_text())
    with pytest.raises(loop.TrainingError, match=r"another model.dimension \(model.dimension: 16 → 32\)"):
        loop.check_resumable(saved, micro_config(model={"dimension": 32}))
    assert loop.check_resumable(saved, micro_config(optim={"learning_rate": 5e-4})) == ["optim.learning_rate"]
