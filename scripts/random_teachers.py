"""Writes randomly initialised teachers in the hubs' on-disk formats, for machines with no model hub:
OUT/hubert (a transformers `save_pretrained` folder) and OUT/ecapa (a speechbrain folder with hyperparams.yaml).

They exercise every code path of `jaxcodec precompute --hubert OUT/hubert --ecapa OUT/ecapa`, but their features
are NOT HuBERT's or ECAPA-TDNN's: random weights carry no linguistic or speaker knowledge. The shards' provenance
records the directories and weight fingerprints, so such shards cannot be mistaken for real-teacher ones.

    .venv/bin/python scripts/random_teachers.py --out random_teachers [--size base|tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from teachers.ecapa import save_random_ecapa  # noqa: E402
from teachers.hubert import save_random_hubert  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=["base", "tiny"], default="base",
                        help="base: the real models' architectures (HuBERT base, ECAPA-TDNN C=1024); tiny: toy widths")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hubert = save_random_hubert(args.out / "hubert", size=args.size, seed=args.seed)
    ecapa = save_random_ecapa(args.out / "ecapa", size=args.size, seed=args.seed)
    print(f"random (untrained) teachers written: --hubert {hubert} --ecapa {ecapa}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
