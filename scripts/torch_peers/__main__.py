"""The harness's command line (scripts/torch_peers/cli.py), from the repository root:
`python -m scripts.torch_peers save|run ...`, or from anywhere: `python PATH/scripts/torch_peers save|run ...`."""

import sys
from pathlib import Path

if not __package__:  # run as a folder: the repository root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.torch_peers.cli import main  # noqa: E402

sys.exit(main())
