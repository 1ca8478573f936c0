"""A small shard set of synthetic speech-like audio (harmonic bursts) with random "teacher" features of any
dimensions, written with the real shard writer: for tests and benchmarks that need `jaxcodec train` data without
running the teachers. Random features carry no knowledge: never train a model meant for use on them.

    .venv/bin/python scripts/synthetic_shards.py --out SHARDS [--hubert-dim 768] [--ecapa-dim 192] [--utterances 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxcodec.data import shards  # noqa: E402

SAMPLE_RATE, HOP = 16_000, 320
INT16_SCALE = 20_000  # peak of the int16 audio (the bursts reach ±0.4 before scaling)


def write_synthetic_shards(out: Path, hubert_dim: int, ecapa_dim: int, utterances: int = 40, valid: int = 8,
                           num_shards: int = 2, seed: int = 0) -> Path:
    """`utterances` utterances of 0.4-1 s (the last `valid` in the valid split) over `num_shards` shards."""
    fields = {"audio": {"dtype": "int16", "shape": ["samples"]},
              shards.CONTENT: {"dtype": "float16", "shape": ["frames", hubert_dim]},
              shards.SPEAKER_EMBEDDING: {"dtype": "float16", "shape": [ecapa_dim]}}
    provenance = {shards.CONTENT: {"layer": "9", "dim": hubert_dim}, shards.SPEAKER: {"dim": ecapa_dim},
                  "sample_rate": SAMPLE_RATE, "hop_length": HOP}
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for index in range(num_shards):
        writer = shards.ShardWriter(out, index, num_shards, fields)
        for i in range(index, utterances, num_shards):
            n = int(rng.integers(6_000, 16_000))
            t = np.arange(n) / SAMPLE_RATE
            f0 = 100 + 100 * rng.random()
            wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5)) * (0.5 + 0.5 * np.sin(6 * t))
            wav = 0.2 * wav + 0.01 * rng.standard_normal(n)
            frames = -(-n // HOP)
            writer.write({"id": f"u{i:03d}", "split": "train" if i < utterances - valid else "valid",
                          "sample_rate": SAMPLE_RATE, "num_samples": n, "audio": (wav * INT16_SCALE).astype(np.int16),
                          shards.CONTENT: rng.standard_normal((frames, hubert_dim)).astype(np.float16),
                          shards.SPEAKER_EMBEDDING: rng.standard_normal(ecapa_dim).astype(np.float16)})
        writer.commit(provenance, [], {"num_shards": num_shards})
    shards.merge_index(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hubert-dim", type=int, default=768)
    parser.add_argument("--ecapa-dim", type=int, default=192)
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_synthetic_shards(args.out, args.hubert_dim, args.ecapa_dim, args.utterances, seed=args.seed)
    print(f"synthetic shards written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
