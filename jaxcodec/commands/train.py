"""`jaxcodec train`: train (or resume) the codec on precomputed shards."""

from __future__ import annotations

import argparse
import sys

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
    from jaxcodec import config as config_lib
    from jaxcodec import stopping
    from jaxcodec.data.shards import ShardError
    from jaxcodec.train import loop
    from jaxcodec.train.errors import TrainingError
    from jaxcodec.workdir import CheckpointError

    # Outside the try: a ConfigError reaches the CLI, which prints one line per out-of-range value.
    config = config_lib.load(args.config, args.overrides)
    try:
        last = loop.train(config, args.data, args.workdir,
                          time_budget=None if args.minutes is None else args.minutes * 60,
                          allow_new_data=args.allow_new_data)
        return stopping.STOPPED_EXIT_STATUS if last.get("stopped_by") else 0
    except (TrainingError, ShardError, CheckpointError, ValueError) as err:
        print(f"jaxcodec train: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
