"""`jaxcodec precompute`: the HuBERT and ECAPA-TDNN teachers into shards. The one subcommand that runs PyTorch
(inside teachers.precompute), so jaxcodec itself and a training host never need torch."""

from __future__ import annotations

import argparse
import sys

HELP = "run the HuBERT and ECAPA-TDNN teachers into shards (PyTorch)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from teachers import precompute  # torch-free at import time; torch loads when the command runs

    precompute.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    import importlib.util

    from teachers import precompute

    missing = [name for name in ("torch", "transformers", "speechbrain") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"jaxcodec precompute: error: the teachers need {', '.join(missing)}; install the extra: "
              f"pip install 'jaxcodec[teachers]'", file=sys.stderr)
        return 2
    return precompute.main(args)
