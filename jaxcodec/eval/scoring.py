"""The CPU-bound half of `jaxcodec eval`: scoring the clips the codec wrote, one utterance's group at a time,
in `workers` processes.

Everything here is numpy and C libraries (pesq, pystoi, pyworld, PocketSphinx) working on files: no jax, so the
worker processes start fast (spawned, never forked from a process that runs XLA) and scale with the machine's
cores. One group is an original and the clips made from it (its reconstructions at every bitrate, its voice
conversions); the original's WORLD analysis is computed once per group.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import signal
from collections.abc import Iterator

from jaxcodec import audio
from jaxcodec.eval import asr as asr_lib
from jaxcodec.eval import metrics, world
from jaxcodec.eval.phone_error_rate import hypothesis_phones
from jaxcodec.quality import MetricUnavailable

_pocketsphinx: asr_lib.PocketSphinx | None = None  # one recogniser per worker process


def _init(use_pocketsphinx: bool) -> None:
    global _pocketsphinx
    _pocketsphinx = asr_lib.PocketSphinx() if use_pocketsphinx else None


def _recognised(wav) -> dict:
    """The words (WER) and the phones (PER: phone-loop decoding, silence and noise dropped, space-separated)
    PocketSphinx hears in a clip."""
    phones = hypothesis_phones(_pocketsphinx.decode_phones(wav))
    return {"transcript": _pocketsphinx.transcribe(wav), "decoded_phones": " ".join(phones)}


def score_group(job: dict) -> tuple[list[tuple[int, dict]], dict[str, str]]:
    """job: {"original": path, "original_row": i, "items": [{"row": i, "path": p, "kind": "reconstruction" |
    "conversion", "parallel_target": path or None}], "sample_rate": sr} → ([(row, scores)], {metric: why skipped})."""
    sample_rate, skipped, out = job["sample_rate"], {}, []
    reference, _ = audio.read(job["original"], sample_rate)
    try:
        analysis = world.Analysis(reference, sample_rate)
    except MetricUnavailable as err:
        analysis, skipped["world"] = None, str(err)
    if _pocketsphinx is not None:
        out.append((job["original_row"], _recognised(reference)))
    for item in job["items"]:
        wav, _ = audio.read(item["path"], sample_rate)
        scores: dict = {}
        if item["kind"] == "reconstruction":
            scores.update(metrics.reconstruction_scores(reference, wav, sample_rate))
        if analysis is not None:
            other = world.Analysis(wav, sample_rate)
            scores.update(analysis.compare(other))
            if item.get("parallel_target"):
                target = world.Analysis(audio.read(item["parallel_target"], sample_rate)[0], sample_rate)
                scores["mcd_to_target"] = world.mcd_from_mel_cepstra(target.mel_cepstrum, other.mel_cepstrum)
        if _pocketsphinx is not None:
            scores.update(_recognised(wav))
        out.append((item["row"], scores))
    return out, skipped


def score_groups(jobs: list[dict], workers: int, use_pocketsphinx: bool
                 ) -> Iterator[tuple[list[tuple[int, dict]], dict[str, str]]]:
    """score_group over `jobs`, in order, in `workers` spawned processes (inline when workers ≤ 1)."""
    if workers <= 1 or len(jobs) <= 1:
        _init(use_pocketsphinx)
        yield from map(score_group, jobs)
        return
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                  initargs=(use_pocketsphinx,))
    try:
        yield from pool.map(score_group, jobs)
    finally:  # stopped (a signal, an error): the queued groups are dropped, not scored before the pool ends
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_init(use_pocketsphinx: bool) -> None:
    # Ctrl-C reaches the whole process group: the parent decides (jaxcodec/stopping.py) and ends the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init(use_pocketsphinx)
