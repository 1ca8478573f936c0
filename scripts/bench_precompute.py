"""Benchmark (not a test): teacher precompute throughput, and what the pipeline costs on top of the models.

Builds HuBERT-base-sized and ECAPA-sized models with random weights (saved and loaded in the hubs' on-disk formats,
as real checkpoints are), synthesises a corpus with LibriSpeech-like utterance lengths (FLAC, 16 kHz, a quarter at
44.1 kHz so resampling is exercised), then alternates two measurements on the same batches:
  pipeline — `teachers.precompute.run` end to end with the teachers already loaded: reading, decoding, resampling,
             batching, both teachers, float16 conversion, msgpack, ArrayRecord writing, sha256, index merge;
  forward  — the same batches' teacher calls alone, on audio already in memory.
overhead = median(pipeline) / median(forward) − 1 (the issue's bound: ≤ 15 %).

    .venv/bin/python scripts/bench_precompute.py [--seconds 90] [--repeats 3] [--size base|tiny]

Prints a table and writes bench/results/precompute.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxcodec import audio  # noqa: E402
from jaxcodec.data import manifest  # noqa: E402
from teachers import precompute  # noqa: E402
from teachers.ecapa import save_random_ecapa  # noqa: E402
from teachers.hubert import save_random_hubert  # noqa: E402

LENGTHS = (2.0, 16.0)  # utterance seconds, uniform: LibriSpeech's bulk lies in this range
RESAMPLED_SHARE = 4  # every 4th file at 44.1 kHz


def synth_corpus(directory: Path, seconds: float, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows, total, i = [], 0.0, 0
    while total < seconds:
        dur = float(rng.uniform(*LENGTHS))
        rate = 44_100 if i % RESAMPLED_SHARE == 0 else 16_000
        t = np.arange(int(dur * rate)) / rate
        f0 = 90 + 120 * rng.random()
        wav = sum(np.sin(2 * np.pi * k * f0 * t * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t))) / k for k in range(1, 8))
        wav = 0.1 * wav * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + 0.005 * rng.standard_normal(len(t))
        path = directory / f"{i % 5}" / "0" / f"{i % 5}-0-{i:04d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wav.astype(np.float32), rate, subtype="PCM_16")
        rows.append({"id": path.stem, "path": str(path), "duration": round(len(t) / rate, 4), "frames": len(t),
                     "sample_rate": rate, "channels": 1, "speaker": str(i % 5), "chapter": "0", "text": None,
                     "split": "train"})
        total += dur
        i += 1
    return rows


def forward_only(teachers: precompute.Teachers, rows: list[dict], options: precompute.Options) -> dict[str, float]:
    """The same batches as the pipeline forms (same order, same budget), audio decoded beforehand; seconds spent in
    each teacher and in both."""
    ordered = sorted(rows, key=lambda e: (e["duration"], e["id"]))
    loaded = [precompute.load(e, options.min_seconds, options.max_seconds) for e in ordered]
    groups = [group for group, _ in precompute.batches(iter(loaded), int(options.batch_seconds * audio.SAMPLE_RATE))]
    spent = {"hubert": 0.0, "ecapa": 0.0}  # the content and speaker teachers of this benchmark
    for group in groups:
        wavs, texts = [u.wav for u in group], [None] * len(group)
        for name, teacher in (("hubert", teachers.content), ("ecapa", teachers.speaker)):
            start = time.perf_counter()
            teacher.features(wavs, texts)
            spent[name] += time.perf_counter() - start
    return {**spent, "total": spent["hubert"] + spent["ecapa"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="audio in the synthetic corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="base", choices=["base", "tiny"])
    parser.add_argument("--out", type=Path, default=Path("bench/results/precompute.json"))
    args = parser.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench_precompute_"))
    try:
        rows = synth_corpus(work / "corpus", args.seconds)
        manifest_path = work / "manifest.jsonl"
        manifest.write(rows, [], manifest_path)
        audio_seconds = sum(r["duration"] for r in rows)
        options = precompute.Options(
            manifest=manifest_path, out=work / "shards",
            hubert=str(save_random_hubert(work / "hubert", size=args.size)),
            ecapa=str(save_random_ecapa(work / "ecapa", size=args.size)), num_shards=2, progress=False)
        start = time.perf_counter()
        teachers = precompute.Teachers(options)
        load_seconds = time.perf_counter() - start
        forward_only(teachers, rows[:2], options)  # warm-up: first-call allocations, oneDNN kernel choice

        pipeline, forward, parts = [], [], []
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both sides alike
            shutil.rmtree(options.out, ignore_errors=True)
            start = time.perf_counter()
            precompute.run(options, log=lambda m: None, teachers=teachers)
            pipeline.append(time.perf_counter() - start)
            parts.append(forward_only(teachers, rows, options))
            forward.append(parts[-1]["total"])
        p, f = statistics.median(pipeline), statistics.median(forward)
        result = {
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
            "size": args.size, "utterances": len(rows), "audio_seconds": round(audio_seconds, 2),
            "teacher_load_seconds": round(load_seconds, 2),
            "pipeline_seconds": [round(x, 3) for x in pipeline], "forward_seconds": [round(x, 3) for x in forward],
            "pipeline_audio_seconds_per_second": round(audio_seconds / p, 3),
            "forward_audio_seconds_per_second": round(audio_seconds / f, 3),
            "overhead": round(p / f - 1, 4),
            "forward_share": {name: round(statistics.median(x[name] for x in parts) / f, 3)
                              for name in ("hubert", "ecapa")},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.size} teachers, {result['utterances']} utterances, {result['audio_seconds']} s of audio, "
          f"{result['machine']['cpu_count']} CPUs (load {result['machine']['load_average'][0]:.2f})")
    print("| run | median s | spread s | audio-s / s |")
    print("|---|---|---|---|")
    for name, times in (("pipeline (read → shards)", pipeline), ("model forward only", forward)):
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f}–{max(times):.2f} | "
              f"{audio_seconds / statistics.median(times):.2f} |")
    print(f"forward time: HuBERT {100 * result['forward_share']['hubert']:.0f} %, "
          f"ECAPA {100 * result['forward_share']['ecapa']:.0f} %")
    print(f"pipeline overhead over the forward: {100 * result['overhead']:+.1f} % (bound: +15 %); "
          f"teacher load {load_seconds:.1f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
