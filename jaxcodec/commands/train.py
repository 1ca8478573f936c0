"""`jaxcodec train`: train (or resume) the codec on precomputed shards."""

from __future__ import annotations

import argparse

from jaxcodec.commands.options import add_config_args

HELP = "train (or resume) the codec on precomputed shards over the device mesh"


def _positive_minutes(text: str) -> float:
    minutes = float(text)
    if not minutes > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return minutes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--data", required=True, help="shard directory from `jaxcodec precompute`")
    parser.add_argument("--workdir", required=True,
                        help="run directory (checkpoints, metrics.jsonl, samples); resumed when it holds a checkpoint")
    parser.add_argument("--minutes", type=_positive_minutes, default=None,
                        help="stop cleanly after this many minutes, at a validated checkpoint; the same command "
                             "continues the run (a multi-hour CPU run in several sittings)")
    parser.add_argument("--allow-new-data", action="store_true",
                        help="resume on another shard set than the one the workdir was trained on (recorded in "
                             "WORKDIR/data.json); without it such a resume is refused")


def main(args: argparse.Namespace) -> int:
    from jaxcodec.train import loop

    return loop.main(args)
