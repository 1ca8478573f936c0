"""The evaluation models that run in PyTorch (a speaker encoder, a transformers ASR) live in `teachers/evaluation/`
and run in a subprocess, because jaxcodec never imports torch: a list of audio files goes in, one output file comes
out."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from jaxcodec import python_child
from jaxcodec.quality import MetricUnavailable

T = TypeVar("T")


class ToolError(RuntimeError):
    """The tool ran and failed (e.g. its model could not load); the message is its last line."""


def run_on_files(module: str, paths: list[str | Path], options: list[str], suffix: str,
                 read: Callable[[Path], T]) -> T:
    """`python -m module --list FILES --out OUT *options`, then read(OUT) before the temporary folder goes."""
    with tempfile.TemporaryDirectory(prefix="jaxcodec-tool-") as tmp:
        listing, out = Path(tmp) / "files.txt", Path(tmp) / f"out{suffix}"
        listing.write_text("\n".join(str(p) for p in paths) + "\n")
        done = python_child.run(module, ["--list", str(listing), "--out", str(out), *options],
                                capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            if "No module named" in last:
                raise MetricUnavailable(f"{module} needs the eval and teachers extras ({last})")
            raise ToolError(last)
        return read(out)
