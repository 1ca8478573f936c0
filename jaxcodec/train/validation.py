"""Validation during training: mean mel and L1 reconstruction losses over the valid split on every process, and
on process 0 a cheap trend of wide-band PESQ and STOI on a few crops, WAV files and TensorBoard audio."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxcodec import audio, losses, quality
from jaxcodec.config import Config
from jaxcodec.data import pipeline
from jaxcodec.data.shards import ShardReader
from jaxcodec.train import reports, sharding
from jaxcodec.train import state as state_lib
from jaxcodec.train.tensorboard import TensorBoard
from jaxcodec.workdir import SAMPLES_FOLDER

SAMPLES_PER_VALIDATION = 2  # validation reconstructions written as WAV files at each validation
PESQ_CLIPS = 8  # validation crops scored with PESQ and STOI (a cheap trend line; `jaxcodec eval` scores whole files)


def eval_step(graphs, config: Config, state: state_lib.TrainState, batch: dict) -> dict:
    codec = state_lib.merge_codec(graphs, state)
    wav, mask = batch["wav"], batch["mask"]
    recon = codec.decode(codec.encode(wav))[:, :wav.shape[1]]
    return {"mel": losses.mel_loss(wav, recon, config.loss, config.model.sample_rate, mask),
            "l1": losses.l1_time(wav, recon, mask), "recon": recon}


class EvalProgram:
    """`eval_step` jitted over the mesh, compiled at its first call and run once every process has it
    (sharding.processes_meet)."""

    def __init__(self, graphs, config: Config, state_shardings, batch_sharding):
        self._jitted = jax.jit(lambda state, batch: eval_step(graphs, config, state, batch),
                               in_shardings=(state_shardings, batch_sharding))
        self._compiled = None

    def __call__(self, state, batch: dict) -> dict:
        if self._compiled is None:
            self._compiled = self._jitted.lower(state, batch).compile()
            sharding.processes_meet("eval_step")
        return self._compiled(state, batch)


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
                folder = workdir / SAMPLES_FOLDER / f"{step:08d}"
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


def validate_and_log(eval_fn, state, reader: ShardReader, config: Config, mesh, step: int, workdir: Path,
                      logs: reports.Logs) -> dict:
    """One validation pass, written to metrics.jsonl and the log; returns the scores every process shares."""
    scores, extras = validate(eval_fn, state, reader, config, mesh, step, workdir, logs.board)
    if scores:
        logs.write({"step": step, **scores, **extras})
        logs.log(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in {**scores, **extras}.items()))
    return scores
