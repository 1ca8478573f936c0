"""What both teachers share (torch is imported only inside functions, so the CLI can build its parser
without it): load errors a user can act on, weight fingerprints for provenance, frame arithmetic
that maps a teacher's frames onto the codec's 50 Hz grid, and the chunk plan that bounds memory on long files."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

CODEC_HOP = 320  # samples per codec frame at 16 kHz (SEANet ratios 8·5·4·2 → 50 Hz); shards store this grid.


class TeacherLoadError(RuntimeError):
    """A teacher model cannot be loaded; the message is one line saying what to do."""


def is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


HUB_PROBE_SECONDS = 3.0  # a reachable hub answers a TCP connect in well under this


def hub_reachable() -> bool:
    """Whether the model hub (HF_ENDPOINT, default huggingface.co) accepts a connection. Asked only when a model is
    not in the local cache: without it, huggingface_hub retries for ~25 s, printing a warning per retry, before
    failing. HF_HUB_OFFLINE=1 means no."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_SECONDS):
            return True
    except OSError:
        return False


def offline_message(kind: str, source: str, flag: str) -> str:
    return (f"cannot load {kind} '{source}': the model hub is unreachable and the model is not in the local cache; "
            f"download it on a connected machine, or pass a local directory with {flag} DIR")


def weights_sha256(module) -> str:
    """A fingerprint of the weights themselves (name, dtype, shape, bytes of every tensor in the state dict of a
    torch module), independent of the file format they were loaded from."""
    import torch  # here, not at import time: the CLI imports this package to build its parser

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def codec_frames(num_samples: int, hop: int = CODEC_HOP) -> int:
    """Frames the codec gives for `num_samples` (its convs pad to whole frames): ceil(N / hop)."""
    return -(-num_samples // hop)


def fit_frames(frames_tc: np.ndarray, num_frames: int) -> np.ndarray:
    """Crops or extends (repeating the last frame) a [T, C] array to exactly `num_frames` rows."""
    if len(frames_tc) >= num_frames:
        return frames_tc[:num_frames]
    pad = np.repeat(frames_tc[-1:], num_frames - len(frames_tc), axis=0)
    return np.concatenate([frames_tc, pad], axis=0)


@dataclasses.dataclass(frozen=True)
class Chunk:
    start: int  # first sample given to the model
    stop: int  # one past the last sample given to the model
    keep_start: int  # first codec frame (of the whole file) this chunk's output provides
    keep_stop: int  # one past the last codec frame it provides
    offset: int  # codec frame index of the chunk's first frame (start // hop)


def chunk_plan(num_samples: int, max_samples: int, context_samples: int, hop: int = CODEC_HOP) -> list[Chunk]:
    """Splits a long signal into windows of at most `max_samples` whose outputs tile the codec frame grid.

    Each window's first and last `context_samples` are context only: frames there come from the neighbouring
    window, where they sit in the middle. Window starts are whole hops, so every window's frames line up with the
    file's frame grid. A signal that fits is one chunk.
    """
    total = codec_frames(num_samples, hop)
    if num_samples <= max_samples:
        return [Chunk(0, num_samples, 0, total, 0)]
    window = (max_samples // hop) * hop
    context = -(-context_samples // hop)  # in frames
    step = window // hop - 2 * context  # frames each interior window provides
    if step <= 0:
        raise ValueError(f"chunk of {max_samples} samples is too short for {context_samples} samples of context")
    chunks = []
    keep_start = 0
    while keep_start < total:
        offset = max(0, keep_start - context)
        start = offset * hop
        stop = min(num_samples, start + window)
        last = stop >= num_samples
        keep_stop = total if last else min(total, offset + window // hop - context)
        chunks.append(Chunk(start, stop, keep_start, keep_stop, offset))
        keep_start = keep_stop
    return chunks


def file_list_tool(prog: str, description: str, out_kind: str, argv: list[str] | None, add_model_argument
                   ) -> tuple[object, list[str]]:
    """The command line shared by the evaluation tools that jaxcodec runs in a subprocess (teachers.speaker,
    teachers.asr): --list FILES (one audio path per line), --out, --device, plus the tool's model argument.
    Returns (args, paths)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_model_argument(parser)
    parser.add_argument("--list", required=True, type=Path, help="text file, one audio path per line")
    parser.add_argument("--out", required=True, type=Path, help=f"output {out_kind}")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    return args, [line.strip() for line in args.list.read_text().splitlines() if line.strip()]
