"""`jaxcodec train --config C --data SHARDS --workdir W [--set k=v]`: the training loop.

Starts a run, or resumes it when W holds a checkpoint: the state (parameters, optimizer states, codebooks,
balancer, step, RNG) and the input pipeline's position come back exactly, so a run killed at any moment continues
the trajectory it was on. The loop never waits for the device to log: step k's metrics are fetched after step k+1
has been dispatched. Writes W/config.json, W/metrics.jsonl (one JSON line per logged step and per validation),
W/checkpoints/ (orbax) and W/samples/STEP/*.wav (validation reconstructions).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxcodec import atomic, audio, losses
from jaxcodec import config as config_lib
from jaxcodec.config import Config
from jaxcodec.data import pipeline
from jaxcodec.data.shards import ShardError, ShardReader
from jaxcodec.train import sharding
from jaxcodec.train import state as state_lib
from jaxcodec.train import step as step_lib
from jaxcodec.train.checkpoint import Checkpointer

# Config keys whose change would alter array shapes or the data stream: a resumed run must keep them.
RESUME_FIXED = ("model.", "rvq.n_q", "rvq.codebook_size", "disc.", "loss.balancer", "data.", "train.batch_size",
                "train.seed")
SAMPLES_PER_VALIDATION = 2  # validation reconstructions written as WAV files at each validation
BEST_METRIC = "valid_mel"


class TrainingError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(saved: dict, config: Config) -> list[str]:
    """Refuses (TrainingError) a resume whose config changes shapes or the data stream; returns the other
    changed keys (learning rate, step count, ...) so the caller can say what changed."""
    old, new = _flatten(saved), _flatten(config_lib.to_dict(config))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    fixed = [k for k in changed if k.startswith(RESUME_FIXED)]
    if fixed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in fixed[:4])
        raise TrainingError(f"the workdir's checkpoint was trained with another {fixed[0]} ({diffs}); resuming "
                            f"would change shapes or the data stream: use a new --workdir, or the saved config")
    return changed


def _to_python(tree) -> dict:
    return {k: (v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in tree.items()}


class _MetricsLog:
    """metrics.jsonl, appended and flushed line by line (a killed run loses at most the line being written)."""

    def __init__(self, path: Path, start_step: int):
        if path.exists():  # drop lines of steps a resumed run will redo
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) < start_step]
            atomic.write_text(path, "".join(line + "\n" for line in kept))
        self.file = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _eval_step(graphs, config: Config, state: dict, batch: dict) -> dict:
    codec = state_lib.merge_codec(graphs, state)
    wav, mask = batch["wav"], batch["mask"]
    recon = codec.decode(codec.encode(wav))[:, :wav.shape[1]]
    return {"mel": losses.mel_loss(wav, recon, config.loss, config.model.sample_rate, mask),
            "l1": losses.l1_time(wav, recon, mask), "recon": recon}


def validate(eval_fn, state, reader: ShardReader, config: Config, mesh, step: int, workdir: Path) -> dict:
    dataset = pipeline.make_dataset(reader, config, split="valid", shuffle=False, repeat=False,
                                    process_index=jax.process_index(), process_count=jax.process_count())
    totals, count, samples_written = {"mel": 0.0, "l1": 0.0}, 0, 0
    for local in dataset:
        out = eval_fn(state, pipeline.global_batch(local, mesh))
        for name in totals:
            totals[name] += float(out[name])
        count += 1
        if samples_written < SAMPLES_PER_VALIDATION and jax.process_index() == 0:
            recon = np.asarray(jax.device_get(out["recon"].addressable_shards[0].data))
            folder = workdir / "samples" / f"{step:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            audio.write(folder / f"reconstruction_{samples_written}.wav", recon[0])
            audio.write(folder / f"original_{samples_written}.wav", local["wav"][0])
            samples_written += 1
    if count == 0:
        return {}
    return {f"valid_{name}": value / count for name, value in totals.items()}


def train(config: Config, data: str | Path, workdir: str | Path, log=print) -> dict:
    """Runs (or resumes) training to `train.num_steps`; returns the last logged metrics."""
    sharding.maybe_initialize_distributed()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh(config.mesh)
    reader = ShardReader(data)
    has_valid = len(reader.indices("valid")) >= config.train.batch_size
    checkpointer = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints,
                                best_metric=BEST_METRIC)
    try:
        return _run(config, reader, workdir, mesh, checkpointer, has_valid, log)
    finally:
        checkpointer.close()


def _run(config: Config, reader: ShardReader, workdir: Path, mesh, checkpointer: Checkpointer, has_valid: bool,
         log) -> dict:
    tc = config.train
    graphs, shapes = state_lib.abstract(config)
    shardings = sharding.state_shardings(shapes, mesh, config.mesh)
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(config.mesh))
    dataset = pipeline.make_dataset(reader, config, split="train", process_index=jax.process_index(),
                                    process_count=jax.process_count())
    iterator = pipeline.make_iterator(dataset)
    start = checkpointer.latest_step()
    if start is not None:
        changed = check_resumable(checkpointer.saved_config(start) or {}, config)
        if changed:
            log(f"resuming with changed settings: {', '.join(changed)}")
        abstract_state = state_lib.abstract_with_shardings(shapes, shardings)
        state, start = checkpointer.restore(abstract_state, data_iterator=iterator)
        log(f"resumed from step {start} in {workdir}")
    else:
        start = 0
        _, state, _ = state_lib.create(config, mesh)
        atomic.write_json(workdir / "config.json", config_lib.to_dict(config))
    step_fn = step_lib.jit_step(graphs, config, shardings, batch_sharding)
    eval_fn = jax.jit(lambda s, b: _eval_step(graphs, config, s, b), in_shardings=(shardings, batch_sharding))
    metrics_log = _MetricsLog(workdir / "metrics.jsonl", start)
    seconds_per_batch = tc.batch_size * config.data.segment_seconds
    last: dict = {}
    pending = None  # (step, metrics on device): fetched one step later so the host never waits for the device
    started, timed_from = time.perf_counter(), start
    try:
        for step in range(start, tc.num_steps):
            batch = pipeline.global_batch(next(iterator), mesh)
            if step == 0 and config.rvq.kmeans_init:
                state = step_lib.jit_init_codebooks(graphs, config, shardings, batch_sharding)(state, batch)
            state, metrics = step_fn(state, batch)
            if pending is not None:
                last = _report(pending, state, tc, metrics_log, log, started, timed_from, seconds_per_batch)
            pending = (step, metrics)
            done = step + 1
            validating = has_valid and tc.eval_every > 0 and (done % tc.eval_every == 0 or done == tc.num_steps)
            if validating:  # report this step first, so the log stays in step order
                last = _report(pending, state, tc, metrics_log, log, started, timed_from, seconds_per_batch)
                pending = None
            scores = validate(eval_fn, state, reader, config, mesh, done, workdir) if validating else {}
            if scores:
                metrics_log.write({"step": done, **scores})
                log(f"step {done}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            if done % tc.checkpoint_every == 0 or done == tc.num_steps:
                checkpointer.save(done, state, data_iterator=iterator, config=config_lib.to_dict(config),
                                  metrics=scores or None)
        if pending is not None:
            last = _report(pending, state, tc, metrics_log, log, started, timed_from, seconds_per_batch, final=True)
        checkpointer.wait()
    finally:
        metrics_log.close()
    return last


def _report(pending, state, tc, metrics_log: _MetricsLog, log, started: float, timed_from: int,
            seconds_per_batch: float, final: bool = False) -> dict:
    step, metrics = pending
    row = _to_python(jax.device_get(metrics))
    if int(row["skipped"]) and int(jax.device_get(state["skips"])) >= tc.max_consecutive_skips:
        raise TrainingError(f"{tc.max_consecutive_skips} consecutive steps had non-finite losses or gradients "
                            f"(last at step {step}); the last good checkpoint is kept. Lower the learning rate "
                            f"or check the data")
    elapsed = time.perf_counter() - started
    steps_done = step + 1 - timed_from
    rate = steps_done * seconds_per_batch / max(elapsed, 1e-9)
    row.update(step=step, audio_seconds_per_second=round(rate, 2), elapsed=round(elapsed, 2))
    if step % tc.log_every == 0 or final:
        metrics_log.write(row)
        eta = (tc.num_steps - step - 1) * elapsed / max(steps_done, 1)
        log(f"step {step:>7d}  loss {row['loss/total']:.4f}  mel {row['loss/mel']:.4f}  "
            f"sem {row['loss/semantic']:.3f}  ac {row['loss/acoustic']:.3f}  disc {row['loss/disc']:.3f}  "
            f"{rate:.1f} audio-s/s  ETA {eta / 60:.1f} min")
    return row


def main(args) -> int:
    try:
        config = config_lib.load(args.config, args.overrides)
        train(config, args.data, args.workdir)
        return 0
    except (TrainingError, ShardError, ValueError) as err:
        print(f"jaxcodec train: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2

