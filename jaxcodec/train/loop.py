"""`jaxcodec train --config C --data SHARDS --workdir W [--set k=v]`: the training loop.

Starts a run, or resumes it when W holds a checkpoint: the state (parameters, optimizer states, codebooks,
balancer, step, RNG) and the input pipeline's position come back exactly, so a run killed at any moment continues
the trajectory it was on. The loop never waits for the device to log: step k's metrics are fetched after step k+1
has been dispatched. Writes W/config.json, W/metrics.jsonl (one JSON line per logged step and per validation),
W/checkpoints/ (orbax), W/tensorboard/ (scalars, validation audio and spectrograms) and W/samples/STEP/*.wav
(validation reconstructions); logs, metrics and samples come from process 0 only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxcodec import atomic, audio, losses, output_lock, quality, stopping
from jaxcodec import config as config_lib
from jaxcodec.config import Config
from jaxcodec.data import pipeline
from jaxcodec.data.shards import TEACHERS_FILE, ShardError, ShardReader, describe_teachers, speaker_calibration
from jaxcodec.train import reports, sharding
from jaxcodec.train import state as state_lib
from jaxcodec.train import step as step_lib
from jaxcodec.train.checkpoint import Checkpointer
from jaxcodec.train.errors import TrainingError
from jaxcodec.train.tensorboard import TensorBoard
from jaxcodec.workdir import BEST_METRIC, CHECKPOINTS_FOLDER, CheckpointError

# Config keys whose change would alter array shapes or the data stream: a resumed run must keep them.
RESUME_FIXED = ("model.", "rvq.n_q", "rvq.codebook_size", "disc.", "loss.balancer", "data.", "train.batch_size",
                "train.seed")
SAMPLES_PER_VALIDATION = 2  # validation reconstructions written as WAV files at each validation
PESQ_CLIPS = 8  # validation crops scored with PESQ and STOI (a cheap trend line; `jaxcodec eval` scores whole files)
# The shard set a workdir trains on (its index's shard checksums, and the --data path it was given): a resume
# on another set would silently change the data stream, so it is refused unless --allow-new-data.
DATA_FILE = "data.json"


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


def _eval_step(graphs, config: Config, state: state_lib.TrainState, batch: dict) -> dict:
    codec = state_lib.merge_codec(graphs, state)
    wav, mask = batch["wav"], batch["mask"]
    recon = codec.decode(codec.encode(wav))[:, :wav.shape[1]]
    return {"mel": losses.mel_loss(wav, recon, config.loss, config.model.sample_rate, mask),
            "l1": losses.l1_time(wav, recon, mask), "recon": recon}


def validate(eval_fn, state, reader: ShardReader, config: Config, mesh, step: int, workdir: Path,
             board: TensorBoard) -> tuple[dict, dict]:
    """Mean mel and L1 reconstruction losses over the valid split (every process, global batches), and on process
    0 wide-band PESQ of the first PESQ_CLIPS crops (when the eval extra is installed), the first
    SAMPLES_PER_VALIDATION crops as WAV files and TensorBoard audio/spectrograms. Returns (scores identical on
    every process, process-0 extras)."""
    dataset = pipeline.make_dataset(reader, config, split="valid", shuffle=False, repeat=False,
                                    process_index=jax.process_index(), process_count=jax.process_count())
    lead = jax.process_index() == 0
    use_pesq = lead and quality.pesq_available() and config.model.sample_rate == quality.PESQ_SAMPLE_RATE
    use_stoi = lead and quality.stoi_available()
    totals, count, clips, pesq_scores, pesq_skipped, stoi_scores = {"mel": 0.0, "l1": 0.0}, 0, 0, [], 0, []
    for local in dataset:
        out = eval_fn(state, pipeline.global_batch(local, mesh))
        for name in totals:
            totals[name] += float(out[name])
        count += 1
        if not lead or clips >= max(PESQ_CLIPS if use_pesq or use_stoi else 0, SAMPLES_PER_VALIDATION):
            continue
        recon = pipeline.local_rows(out["recon"])
        for original, reconstruction, mask in zip(local["wav"], recon, local["mask"], strict=True):
            n = int(mask.sum())  # crops of short utterances are zero-padded: score and save the real part
            original, reconstruction = original[:n], reconstruction[:n]
            if use_pesq and clips < PESQ_CLIPS:
                try:
                    pesq_scores.append(quality.pesq_wb(original, reconstruction, config.model.sample_rate))
                except ValueError:  # too short or no speech found: not a score
                    pesq_skipped += 1
            if use_stoi and clips < PESQ_CLIPS:  # the same crops as PESQ
                stoi_scores.append(quality.stoi(original, reconstruction, config.model.sample_rate))
            if clips < SAMPLES_PER_VALIDATION:
                folder = workdir / "samples" / f"{step:08d}"
                folder.mkdir(parents=True, exist_ok=True)
                audio.write(folder / f"reconstruction_{clips}.wav", reconstruction)
                audio.write(folder / f"original_{clips}.wav", original)
                board.clip(step, f"valid/clip_{clips}", original, reconstruction, config.model.sample_rate)
            clips += 1
    if count == 0:
        return {}, {}
    extras = {}
    if pesq_scores:
        extras["valid_pesq"] = float(np.mean(pesq_scores))
    if pesq_skipped:
        extras["valid_pesq_skipped"] = pesq_skipped
    if stoi_scores:
        extras["valid_stoi"] = float(np.mean(stoi_scores))
    return {f"valid_{name}": value / count for name, value in totals.items()}, extras


def train(config: Config, data: str | Path, workdir: str | Path, log=print, time_budget: float | None = None,
          allow_new_data: bool = False) -> dict:
    """Runs (or resumes) training to `train.num_steps`; returns the last logged metrics.

    `time_budget` (seconds from the call, e.g. a demo's): once it is spent the loop validates, checkpoints the
    step it reached and returns early (`last["stopped_early"]`); the same call later resumes from there.
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
            check_data(workdir, reader, resuming=checkpointer.latest_step() is not None, allow_new=allow_new_data,
                       log=log)
            with stopping.StopAtBoundary(config.train.stop_signals, processes=jax.process_count(), log=log) as stop:
                return _run(config, reader, workdir, mesh, checkpointer, has_valid, log, deadline, entered, stop)
        finally:
            checkpointer.close()


def _data_identity(reader: ShardReader) -> dict:
    calibration = speaker_calibration(reader.provenance)  # recalibrating a set changes the teacher's targets
    return {"path": str(reader.directory.resolve()),
            "shards_sha256": [shard["sha256"] for shard in reader.index["shards"]],
            "speaker_calibration_sha256": None if calibration is None else hashlib.sha256(
                json.dumps(calibration, sort_keys=True).encode()).hexdigest()}


def check_data(workdir: Path, reader: ShardReader, resuming: bool, allow_new: bool = False, log=print) -> None:
    """Records the shard set's identity in workdir/data.json; on a resume, refuses (TrainingError) a shard set
    with other contents unless `allow_new` (which then records the new one). A workdir from before data.json
    (or from `jaxcodec import`) gets it now."""
    path, current = workdir / DATA_FILE, _data_identity(reader)
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except json.JSONDecodeError as err:
        raise TrainingError(f"{path}: not valid JSON ({err}); delete it to record --data afresh") from None
    changed = saved is not None and (saved.get("shards_sha256") != current["shards_sha256"] or (
        "speaker_calibration_sha256" in saved  # a data.json from before calibration existed: not compared
        and saved["speaker_calibration_sha256"] != current["speaker_calibration_sha256"]))
    if resuming and changed:
        if not allow_new:
            raise TrainingError(f"{workdir} was trained on the shards in {saved.get('path')}; --data "
                                f"{current['path']} holds other shards (or the set was recalibrated): pass "
                                f"--allow-new-data to continue the run on them, or use a new --workdir")
        log(f"continuing on new data: {current['path']} (was {saved.get('path')})")
    if saved != current and jax.process_index() == 0:
        atomic.write_json(path, current)


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
            changed[:] = check_resumable(saved or {}, config)

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
        atomic.write_json(workdir / "config.json", config_lib.to_dict(config))
        # Which teachers guided this run, for evaluation reports (the shards may be gone by then).
        atomic.write_json(workdir / TEACHERS_FILE, reader.provenance)
    eval_fn = jax.jit(lambda s, b: _eval_step(graphs, config, s, b), in_shardings=(shardings, batch_sharding))
    logs = reports.Logs(workdir, start, log)
    reporter = reports.Reporter(config, logs, start, deadline)
    last: dict = {}
    pending = None  # (step, metrics on device): fetched one step later so the host never waits for the device
    started = reporter.started
    try:
        if start == 0 and tc.validate_at_start and has_valid and tc.eval_every > 0 and tc.num_steps > 0:
            _validate_and_log(eval_fn, state, reader, config, mesh, 0, workdir, logs)
        for step in range(start, tc.num_steps):
            batch = pipeline.global_batch(next(iterator), mesh)
            # Imported weights (jaxcodec import) arrive with their codebooks: k-means would overwrite them.
            if step == 0 and config.rvq.kmeans_init and not _codebooks_initialized(state):
                state = step_lib.jit_init_codebooks(graphs, config, shardings, batch_sharding)(state, batch)
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
            scores = _validate_and_log(eval_fn, state, reader, config, mesh, done, workdir, logs) if validating else {}
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


def _validate_and_log(eval_fn, state, reader: ShardReader, config: Config, mesh, step: int, workdir: Path,
                      logs: reports.Logs) -> dict:
    """One validation pass, written to metrics.jsonl and the log; returns the scores every process shares."""
    scores, extras = validate(eval_fn, state, reader, config, mesh, step, workdir, logs.board)
    if scores:
        logs.write({"step": step, **scores, **extras})
        logs.log(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in {**scores, **extras}.items()))
    return scores


def _agreed(flag: bool) -> bool:
    """Process 0's value of `flag` on every process (one tiny broadcast; free on a single process)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def main(args) -> int:
    # Outside the try: a ConfigError reaches the CLI, which prints one line per out-of-range value.
    config = config_lib.load(args.config, args.overrides)
    try:
        minutes = getattr(args, "minutes", None)
        last = train(config, args.data, args.workdir, time_budget=None if minutes is None else minutes * 60,
                     allow_new_data=getattr(args, "allow_new_data", False))
        return stopping.STOPPED_EXIT_STATUS if last.get("stopped_by") else 0
    except (TrainingError, ShardError, CheckpointError, ValueError) as err:
        print(f"jaxcodec train: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2

