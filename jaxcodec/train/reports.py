"""Where a training run reports: metrics.jsonl, TensorBoard and the console (`Logs`, process 0 only), each step's
metrics turned into those reports (`Reporter`), and the checks on them that stop a run: non-finite steps in a
row, a guidance loss at its floor (a warning), divergence (jaxcodec/train/monitor.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxcodec import atomic
from jaxcodec.config import Config
from jaxcodec.train import monitor as monitor_lib
from jaxcodec.train.checkpoint import Checkpointer
from jaxcodec.train.errors import TrainingError
from jaxcodec.train.tensorboard import TensorBoard
from jaxcodec.workdir import METRICS_FILE, TENSORBOARD_FOLDER, metrics_lines


class Diverged(Exception):
    """Raised by `Reporter.report` when the run diverges; the loop turns it into `stop_diverged`'s error."""

    def __init__(self, divergence: monitor_lib.Divergence):
        super().__init__(divergence.metric)
        self.divergence = divergence


def _to_python(tree) -> dict:
    return {k: (v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in tree.items()}


class Logs:
    """Where a run reports, written by process 0 only (every process computes the same global metrics):
    metrics.jsonl, appended and flushed line by line (a killed run loses at most the line being written), the
    TensorBoard event files, and the progress lines."""

    def __init__(self, workdir: Path, start_step: int, log):
        self.lead = jax.process_index() == 0
        self.log = log if self.lead else (lambda *_: None)
        self.board = TensorBoard(workdir / TENSORBOARD_FOLDER, start_step, enabled=self.lead)
        self.file = None
        if self.lead:
            path = workdir / METRICS_FILE
            if path.exists():  # drop lines of steps a resumed run will redo
                kept = [line for line, row in metrics_lines(path, self.log) if row.get("step", 0) < start_step]
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


class Reporter:
    """Turns each step's metrics (fetched one step late) into the run's reports: metrics.jsonl and TensorBoard at
    every log step, the console line, the warnings of a guidance loss at its floor, and the checks that stop a
    run (non-finite steps in a row, divergence: train/monitor.py)."""

    def __init__(self, config: Config, logs: Logs, timed_from: int, deadline: float | None):
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
            raise Diverged(divergence)
        return row


def stop_diverged(divergence: monitor_lib.Divergence, factor: float, checkpointer: Checkpointer,
                  logs: Logs) -> TrainingError:
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
