"""The training loop (`jaxcodec train`, jaxcodec/commands/train.py).

Starts a run, or resumes it when W holds a checkpoint: the state (parameters, optimizer states, codebooks,
balancer, step, RNG) and the input pipeline's position come back exactly, so a run killed at any moment continues
the trajectory it was on. The loop never waits for the device to log: step k's metrics are fetched after step k+1
has been dispatched. The workdir's files are named in jaxcodec/workdir.py; process 0 alone writes all but the
checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from jaxcodec import atomic, losses, output_lock, stopping
from jaxcodec import config as config_lib
from jaxcodec.config import Config
from jaxcodec.data import pipeline
from jaxcodec.data.shards import ShardReader, describe_teachers, speaker_calibration
from jaxcodec.train import reports, resume, sharding, validation
from jaxcodec.train import state as state_lib
from jaxcodec.train import step as step_lib
from jaxcodec.train.checkpoint import Checkpointer
from jaxcodec.train.errors import TrainingError  # noqa: F401 (the error `train` raises, importable from here)
from jaxcodec.workdir import BEST_METRIC, CHECKPOINTS_FOLDER, CONFIG_FILE, TEACHERS_FILE


def resolve_guidance(config: Config, provenance: dict, log=print) -> Config:
    """The config with the acoustic temperature the shard set implies (an explicit loss.acoustic_temperature
    wins): the speaker teacher's calibrated τ under loss.acoustic_standardize, else the paper's 1.0. Says in one
    line what the speaker guidance will use, and warns when it cannot be calibrated."""
    lc = config.loss
    calibration = speaker_calibration(provenance) if lc.acoustic_standardize else None
    tau = lc.acoustic_temperature
    if tau is None:
        tau = calibration["temperature"] if calibration else losses.DEFAULT_TEMPERATURE
    speaker = describe_teachers(provenance)["speaker"]
    if lc.lambda_acoustic > 0 and config.model.acoustic_mode == "utterance":
        if calibration is not None:
            log(f"speaker guidance: {speaker}" + (f"; τ = {tau:.4g} from loss.acoustic_temperature"
                                                  if lc.acoustic_temperature is not None else ""))
        elif lc.acoustic_standardize:
            log(f"warning: the shard set has no speaker-teacher calibration ({speaker}): the acoustic KL compares "
                f"raw embeddings at τ = {tau:g}, which for a unit-norm teacher is uniform and teaches nothing; "
                f"`jaxcodec shards calibrate SHARDS` adds it")
        else:
            log(f"speaker guidance: raw embeddings (loss.acoustic_standardize=false), τ = {tau:g}")
    return dataclasses.replace(config, loss=dataclasses.replace(lc, acoustic_temperature=float(tau)))


def _codebooks_initialized(state: state_lib.TrainState) -> bool:
    # The flag is replicated; read this host's copy (a multi-host global array cannot be converted whole).
    return bool(np.asarray(state.codec.rest["quantizer"]["initialized"].addressable_data(0)))


def train(config: Config, data: str | Path, workdir: str | Path, log=print, time_budget: float | None = None,
          allow_new_data: bool = False) -> dict:
    """Runs (or resumes) training to `train.num_steps`; returns the last logged metrics.

    `time_budget` (seconds from the call, e.g. a demo's): once it is spent the loop validates, checkpoints the
    step it reached and returns early (`last["stopped_early"]`); the same call later resumes from there. A stop
    signal (`train.stop_signals`) does the same at the next step boundary without validating (`last["stopped_by"]`).
    A resume on another shard set than the workdir's is refused unless `allow_new_data`."""
    entered = time.perf_counter()
    deadline = None if time_budget is None else time.monotonic() + time_budget
    sharding.maybe_initialize_distributed()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # One run per workdir (jaxcodec.output_lock), taken before anything is compiled or written. The processes of a
    # multi-host run share the workdir: process 0, which writes its files, holds the lock for all of them.
    with output_lock.held(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
        mesh = sharding.make_mesh(config.mesh)
        reader = ShardReader(data)
        reader.check_files()  # before anything compiles: every shard opens and holds the records index.json says
        config = resolve_guidance(config, reader.provenance, log)
        has_valid = len(reader.indices("valid")) >= config.train.batch_size
        checkpointer = Checkpointer(workdir / CHECKPOINTS_FOLDER, keep=config.train.keep_checkpoints,
                                    best_metric=BEST_METRIC)
        try:
            resume.check_data(workdir, reader, resuming=checkpointer.latest_step() is not None,
                              allow_new=allow_new_data, log=log)
            with stopping.StopAtBoundary(config.train.stop_signals, processes=jax.process_count(), log=log) as stop:
                return _run(config, reader, workdir, mesh, checkpointer, has_valid, log, deadline, entered, stop)
        finally:
            checkpointer.close()


def _run(config: Config, reader: ShardReader, workdir: Path, mesh, checkpointer: Checkpointer, has_valid: bool,
         log, deadline: float | None, entered: float | None, stop: stopping.StopAtBoundary) -> dict:
    tc = config.train
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(config.mesh))
    start = checkpointer.latest_step()
    # The first step's program is loaded (or compiled) in the background from the start, while the state is built,
    # restored or initialised and the input pipeline starts; the second program is built on its first use.
    programs = step_lib.StepPrograms(config, mesh, batch_sharding,
                                     pipeline.global_batch_shapes(reader, config, "train", jax.process_count()))
    if (start or 0) < tc.num_steps:
        programs.prepare(step_lib.adversarial_at(config, start or 0))
    graphs, shapes = state_lib.abstract(config)
    shardings = sharding.state_shardings(shapes, mesh, config.mesh)
    programs.provide(graphs, shardings, shapes)
    dataset = pipeline.make_dataset(reader, config, split="train", process_index=jax.process_index(),
                                    process_count=jax.process_count())
    iterator = pipeline.make_iterator(dataset)
    if start is not None:
        changed: list[str] = []

        def check(step: int, saved: dict | None) -> None:
            changed[:] = resume.check_resumable(saved or {}, config)

        abstract_state = state_lib.abstract_with_shardings(shapes, shardings)
        state, start, skipped = checkpointer.restore_newest(abstract_state, data_iterator=iterator, check=check)
        for step, reason in skipped:
            log(f"checkpoint step {step} skipped, it does not restore ({reason}); moved to "
                f"{checkpointer.damaged_directory}/{step}")
        if changed:
            log(f"resuming with changed settings: {', '.join(changed)}")
        log(f"resumed from step {start} in {workdir}")
    else:
        start = 0
        _, state, _ = state_lib.create(config, mesh)
        atomic.write_json(workdir / CONFIG_FILE, config_lib.to_dict(config))
        # Which teachers guided this run, for evaluation reports (the shards may be gone by then).
        atomic.write_json(workdir / TEACHERS_FILE, reader.provenance)
    eval_fn = validation.EvalProgram(graphs, config, shardings, batch_sharding)
    logs = reports.Logs(workdir, start, log)
    reporter = reports.Reporter(config, logs, start, deadline)
    last: dict = {}
    pending = None  # (step, metrics on device): fetched one step later so the host never waits for the device
    started = reporter.started
    try:
        if start == 0 and tc.validate_at_start and has_valid and tc.eval_every > 0 and tc.num_steps > 0:
            validation.validate_and_log(eval_fn, state, reader, config, mesh, 0, workdir, logs)
        for step in range(start, tc.num_steps):
            batch = pipeline.global_batch(next(iterator), mesh)
            # Imported weights (jaxcodec import) arrive with their codebooks: k-means would overwrite them.
            if step == 0 and config.rvq.kmeans_init and not _codebooks_initialized(state):
                state = step_lib.run_init_codebooks(graphs, config, shardings, batch_sharding, state, batch)
            state, metrics = programs[step_lib.adversarial_at(config, step)](state, batch)
            if step == start:  # start-up: restore or initialisation, compilation (or the cache), the first step
                jax.block_until_ready(metrics)
                startup = time.perf_counter() - (started if entered is None else entered)
                logs.log(f"first step done {startup:.1f} s after start")
            if pending is not None:
                last = reporter.report(pending, state)
            pending = (step, metrics)
            done = step + 1
            # Every process must agree to stop at the same step (they all checkpoint it): process 0 decides.
            out_of_time = deadline is not None and _agreed(time.monotonic() > deadline)
            stopped = stop.agreed(done)  # a stop signal: checkpoint this step and go, without validating
            last_step = done == tc.num_steps or out_of_time or stopped
            validating = has_valid and tc.eval_every > 0 and (done % tc.eval_every == 0 or (last_step and not stopped))
            if validating:  # report this step first, so the log stays in step order
                last = reporter.report(pending, state)
                pending = None
            scores = (validation.validate_and_log(eval_fn, state, reader, config, mesh, done, workdir, logs)
                      if validating else {})
            if stopped and done < tc.num_steps:
                logs.log(f"{stop.requested}: stopping at step {done}, saving its checkpoint (a second signal exits "
                         f"at once and keeps the previous checkpoint)")
            if done % tc.checkpoint_every == 0 or last_step:
                checkpointer.save(done, state, data_iterator=iterator, config=config_lib.to_dict(config),
                                  metrics=scores or None)
            if stopped and done < tc.num_steps:
                break
            if out_of_time and done < tc.num_steps:
                logs.log(f"time budget spent: stopped at step {done} of {tc.num_steps} (checkpointed; rerun to "
                         f"continue)")
                break
        if pending is not None:
            last = reporter.report(pending, state, final=True)
        if start < tc.num_steps:
            last = {**last, "stopped_early": bool((out_of_time or stopped) and done < tc.num_steps)}
        checkpointer.wait()
        if start < tc.num_steps and stopped and done < tc.num_steps:
            last["stopped_by"] = stop.requested
            logs.log(f"stopped by {stop.requested} at step {done} (checkpoint saved); run the same command to "
                     f"continue")
    except reports.Diverged as stop:
        raise reports.stop_diverged(stop.divergence, tc.divergence_factor, checkpointer, logs) from None
    finally:
        logs.close()
    return last


def _agreed(flag: bool) -> bool:
    """Process 0's value of `flag` on every process (one tiny broadcast; free on a single process)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


