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

from jaxcodec import atomic, audio, losses, output_lock, quality
from jaxcodec import config as config_lib
from jaxcodec.config import Config
from jaxcodec.data import pipeline
from jaxcodec.data.shards import TEACHERS_FILE, ShardError, ShardReader, describe_teachers, speaker_calibration
from jaxcodec.train import monitor as monitor_lib
from jaxcodec.train import sharding
from jaxcodec.train import state as state_lib
from jaxcodec.train import step as step_lib
from jaxcodec.train.checkpoint import Checkpointer
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


class TrainingError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


class _Diverged(Exception):
    def __init__(self, divergence: monitor_lib.Divergence):
        super().__init__(divergence.metric)
        self.divergence = divergence


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


def _to_python(tree) -> dict:
    return {k: (v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in tree.items()}


def _metrics_rows(path: Path, log) -> list[tuple[str, dict]]:
    """(line, parsed row) of each line of metrics.jsonl. A last line cut short (a run killed mid-write) is
    dropped with a warning; an invalid line anywhere else means the file was damaged or edited: TrainingError."""
    lines = [(number, line) for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if line.strip()]
    rows = []
    for number, line in lines:
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as err:
            if number == lines[-1][0]:
                log(f"warning: {path}: line {number} is incomplete (a run stopped while writing it); dropped")
                continue
            raise TrainingError(f"{path}: line {number} is not a JSON object ({err}); fix or delete that line "
                                f"to resume") from None
        rows.append((line, row))
    return rows


class _Logs:
    """Where a run reports, written by process 0 only (every process computes the same global metrics):
    metrics.jsonl, appended and flushed line by line (a killed run loses at most the line being written), the
    TensorBoard event files, and the progress lines."""

    def __init__(self, workdir: Path, start_step: int, log):
        self.lead = jax.process_index() == 0
        self.log = log if self.lead else (lambda *_: None)
        self.board = TensorBoard(workdir / "tensorboard", start_step, enabled=self.lead)
        self.file = None
        if self.lead:
            path = workdir / "metrics.jsonl"
            if path.exists():  # drop lines of steps a resumed run will redo
                kept = [line for line, row in _metrics_rows(path, self.log) if row.get("step", 0) < start_step]
                atomic.write_text(path, "".join(line + "\n" for line in kept))
            self.file = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        self.board.scalars(row["step"], row)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.board.close()


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
            return _run(config, reader, workdir, mesh, checkpointer, has_valid, log, deadline, entered)
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
         log, deadline: float | None = None, entered: float | None = None) -> dict:
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
    logs = _Logs(workdir, start, log)
    reporter = _Reporter(config, logs, start, deadline)
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
            last_step = done == tc.num_steps or out_of_time
            validating = has_valid and tc.eval_every > 0 and (done % tc.eval_every == 0 or last_step)
            if validating:  # report this step first, so the log stays in step order
                last = reporter.report(pending, state)
                pending = None
            scores = _validate_and_log(eval_fn, state, reader, config, mesh, done, workdir, logs) if validating else {}
            if done % tc.checkpoint_every == 0 or last_step:
                checkpointer.save(done, state, data_iterator=iterator, config=config_lib.to_dict(config),
                                  metrics=scores or None)
            if out_of_time and done < tc.num_steps:
                logs.log(f"time budget spent: stopped at step {done} of {tc.num_steps} (checkpointed; rerun to "
                         f"continue)")
                break
        if pending is not None:
            last = reporter.report(pending, state, final=True)
        last = {**last, "stopped_early": bool(out_of_time and done < tc.num_steps)} if start < tc.num_steps else last
        checkpointer.wait()
    except _Diverged as stop:
        raise _stop_diverged(stop.divergence, tc.divergence_factor, checkpointer, logs) from None
    finally:
        logs.close()
    return last


def _validate_and_log(eval_fn, state, reader: ShardReader, config: Config, mesh, step: int, workdir: Path,
                      logs: _Logs) -> dict:
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


class _Reporter:
    """Turns each step's metrics (fetched one step late) into the run's reports: metrics.jsonl and TensorBoard at
    every log step, the console line, the warnings of a guidance loss at its floor, and the checks that stop a
    run (non-finite steps in a row, divergence: train/monitor.py)."""

    def __init__(self, config: Config, logs: _Logs, timed_from: int, deadline: float | None):
        self.tc, self.logs, self.timed_from, self.deadline = config.train, logs, timed_from, deadline
        self.seconds_per_batch = config.train.batch_size * config.data.segment_seconds
        self.started = time.perf_counter()
        self.floors = monitor_lib.FloorMonitor(config)
        self.divergence = monitor_lib.DivergenceMonitor(config)

    def report(self, pending, state, final: bool = False) -> dict:
        tc = self.tc
        step, metrics = pending
        row = _to_python(jax.device_get(metrics))
        if int(row["skipped"]) and int(jax.device_get(state.skips)) >= tc.max_consecutive_skips:
            raise TrainingError(f"{tc.max_consecutive_skips} consecutive steps had non-finite losses, gradients or "
                                f"updates (last at step {step}); the last good checkpoint is kept. Lower the learning "
                                f"rate or check the data")
        elapsed = time.perf_counter() - self.started
        steps_done = step + 1 - self.timed_from
        rate = steps_done * self.seconds_per_batch / max(elapsed, 1e-9)
        row.update(step=step, audio_seconds_per_second=round(rate, 2), elapsed=round(elapsed, 2))
        if step % tc.log_every == 0 or final:
            self.logs.write(row)
            eta = (tc.num_steps - step - 1) * elapsed / max(steps_done, 1)
            if self.deadline is not None:  # a time budget stops the run first when it is shorter
                eta = max(min(eta, self.deadline - time.monotonic()), 0.0)
            disc = f"disc {row['loss/disc']:.3f}  " if "loss/disc" in row else ""  # not in generator-only steps
            self.logs.log(f"step {step:>7d}  loss {row['loss/total']:.4f}  mel {row['loss/mel']:.4f}  "
                          f"sem {row['loss/semantic']:.3f}/{row['loss/semantic_floor']:.3f}  "
                          f"ac {row['loss/acoustic']:.3f}/{row['loss/acoustic_floor']:.3f}  {disc}"
                          f"{rate:.1f} audio-s/s  ETA {eta / 60:.1f} min")
        for warning in self.floors.observe(step, row):
            self.logs.log(warning)
            self.logs.write({"step": step, "warning": warning})
        if (divergence := self.divergence.observe(step, row)) is not None:
            raise _Diverged(divergence)
        return row


def _stop_diverged(divergence: monitor_lib.Divergence, factor: float, checkpointer: Checkpointer,
                   logs: _Logs) -> TrainingError:
    """Sets aside the checkpoints saved since the divergence began and says where the run can resume."""
    set_aside = checkpointer.set_aside_from(divergence.onset)
    good = checkpointer.latest_step()
    where = (f"the last good checkpoint is step {good}" if good is not None
             else "no checkpoint was saved before it began")
    moved = (f" ({'steps' if len(set_aside) > 1 else 'step'} {', '.join(map(str, set_aside))} moved to "
             f"{checkpointer.diverged_directory})" if set_aside else "")
    message = (f"{divergence.message(factor)}; stopped: {where}{moved}. Lower optim.learning_rate, "
               f"loss.lambda_acoustic or loss.lambda_semantic, or raise loss.acoustic_temperature, then run the "
               f"same command to resume")
    logs.write({"step": divergence.step, "diverged": message})
    return TrainingError(message)


def main(args) -> int:
    # Outside the try: a ConfigError reaches the CLI, which prints one line per out-of-range value.
    config = config_lib.load(args.config, args.overrides)
    try:
        minutes = getattr(args, "minutes", None)
        train(config, args.data, args.workdir, time_budget=None if minutes is None else minutes * 60,
              allow_new_data=getattr(args, "allow_new_data", False))
        return 0
    except (TrainingError, ShardError, CheckpointError, ValueError) as err:
        print(f"jaxcodec train: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2

