"""`jaxcodec encode | decode | resynth`: a trained codec over files — one file, a folder (recursively) or a
manifest in; `.npy` codes or WAV files out.

- Batches: inputs are grouped by their padded length (the tokenizer's 1 s buckets) and run `--batch-size` at a
  time. Every example in a batch then has the shape it would have alone, and the codec treats examples
  independently, so batched results equal one-by-one results exactly (tested).
- Codes files: `numpy.save` of int16 [n_q, T] (int32 when the codebook exceeds int16), read back with
  `allow_pickle=False`; decode checks dtype, shape and range before running anything.
- Long jobs: inputs are grouped from their headers and read one batch at a time (memory is bounded by a batch);
  an unreadable input is recorded (`rejects.jsonl` in the output folder, and on stderr) and skipped; outputs that
  already exist are kept unless `--overwrite`, so a rerun resumes; every output is written under a temporary
  name and renamed. The exit code is 1 if any input failed, 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from jaxcodec import atomic, audio

CODES_SUFFIX = ".npy"


class InferenceError(ValueError):
    """Unusable input arguments (the message is the one line a user reads)."""


def _inputs(source: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(name, path) pairs: a file; every file with one of `suffixes` under a folder (name = relative path without
    suffix); or a manifest's entries (name = id)."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in suffixes and not p.name.startswith("."))
        return [(str(p.relative_to(source).with_suffix("")), p) for p in files]
    if source.suffix == ".jsonl":
        from jaxcodec.data import manifest

        return [(entry["id"], Path(entry["path"])) for entry in manifest.read(source)]
    if source.is_file():
        return [(source.stem, source)]
    raise InferenceError(f"{source}: no such file or folder")


def _output(out: Path, name: str, single: bool, suffix: str) -> Path:
    return out if single else out / f"{name}{suffix}"


def read_codes(path: Path, n_q: int, codebook_size: int) -> np.ndarray:
    """An int [n_q', T] codes file (n_q' ≤ n_q, values in range), or ValueError naming the problem."""
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"not a numpy codes file ({str(err).splitlines()[0]})") from None
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got {codes.dtype}")
    if codes.ndim != 2 or not 1 <= codes.shape[0] <= n_q or codes.shape[1] == 0:
        raise ValueError(f"codes must be [n_q ≤ {n_q}, T > 0], got shape {codes.shape}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codes must be in 0..{codebook_size - 1}, got {codes.min()}..{codes.max()}")
    return codes


def batches_by_bucket(items: list, length_of, tokenizer, batch_size: int, kind_of=None):
    """Items grouped by padded length (the tokenizer's bucket of `length_of(item)` samples) and by `kind_of(item)`
    (e.g. a codes file's level count), in batches of at most `batch_size`: each example then has the shape it
    would have alone."""
    bucket = tokenizer.bucket or tokenizer.hop_length
    groups = defaultdict(list)
    for item in items:
        groups[(-(-length_of(item) // bucket), kind_of(item) if kind_of else 0)].append(item)
    for _, group in sorted(groups.items()):
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


def loaded_batches(items: list, estimate, load, length_of, tokenizer, batch_size: int, rejects: list,
                   kind_of=None):
    """Batches of (item, data), loaded one batch at a time so memory is bounded by a batch, not the corpus.

    Items are grouped by `estimate(item)` (from a header or the manifest: a length in samples, and the kind), then
    loaded with `load(item)`; an item that fails to load is appended to `rejects` as (item, reason). After loading,
    each batch is regrouped by the data's actual `length_of` / `kind_of`, since a header's length can differ by a
    few samples from the decoded one."""
    def estimated_length(item):
        return estimate(item)[0]

    def estimated_kind(item):
        return estimate(item)[1]

    for batch in batches_by_bucket(items, estimated_length, tokenizer, batch_size, estimated_kind):
        loaded = []
        for item in batch:
            try:
                loaded.append((item, load(item)))
            except (audio.AudioError, ValueError, OSError) as err:
                rejects.append((item, str(err)))
        yield from batches_by_bucket(loaded, lambda pair: length_of(pair[1]), tokenizer, batch_size,
                                     (lambda pair: kind_of(pair[1])) if kind_of else None)


def _estimate(path: Path, mode: str, sample_rate: int, hop: int) -> tuple[int, int]:
    """(length in samples at the codec's rate, kind) from a file's header, without reading its data; (0, 0) when
    the header is unreadable (loading then rejects the file with the reason)."""
    try:
        if mode == "decode":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return (shape[-1] * hop, shape[0]) if len(shape) == 2 else (0, 0)
        header = audio.info(path)
        return -(-header.frames * sample_rate // header.sample_rate), 0
    except (audio.AudioError, OSError, ValueError):
        return 0, 0


def run(args: argparse.Namespace, mode: str) -> int:
    from tqdm import tqdm

    import jaxcodec

    source, out = Path(args.input), Path(args.out)
    suffixes = (CODES_SUFFIX,) if mode == "decode" else audio.EXTENSIONS
    items = _inputs(source, suffixes)
    if not items:
        raise InferenceError(f"{source}: no {'codes' if mode == 'decode' else 'audio'} files found")
    single = source.is_file() and source.suffix != ".jsonl"
    out_suffix = CODES_SUFFIX if mode == "encode" else ".wav"
    step = args.step if args.step in (None, "best") else int(args.step)
    tokenizer = jaxcodec.load(args.checkpoint, step)
    n_q = args.n_q or tokenizer.n_q
    if not 1 <= n_q <= tokenizer.n_q:
        raise InferenceError(f"--n-q must be in 1..{tokenizer.n_q}, got {n_q}")
    todo = [(name, path) for name, path in items
            if args.overwrite or not _output(out, name, single, out_suffix).exists()]
    estimates = {path: _estimate(path, mode, tokenizer.sample_rate, tokenizer.hop_length) for _, path in todo}
    if mode == "decode":
        load = lambda item: read_codes(item[1], tokenizer.n_q, tokenizer.codebook_size)  # noqa: E731
        length_of, kind_of = (lambda codes: codes.shape[1] * tokenizer.hop_length), (lambda codes: codes.shape[0])
    else:
        load = lambda item: audio.read(item[1], tokenizer.sample_rate)[0]  # noqa: E731
        length_of, kind_of = (lambda wav: wav.size), None
    dtype = np.int16 if tokenizer.codebook_size <= np.iinfo(np.int16).max + 1 else np.int32
    failed: list = []
    done = 0
    with tqdm(total=len(todo), unit="file", disable=args.quiet or single, desc=mode) as progress:
        for batch in loaded_batches(todo, lambda item: estimates[item[1]], load, length_of, tokenizer,
                                    args.batch_size, failed, kind_of):
            _run_batch(tokenizer, [(name, data) for (name, _), data in batch], mode, n_q, out, single, dtype)
            done += len(batch)
            progress.update(len(batch))
    rejects = [{"id": name, "path": str(path), "reason": reason} for (name, path), reason in failed]
    for reject in rejects:
        print(f"jaxcodec {mode}: skipped {reject['path']}: {reject['reason']}", file=sys.stderr)
    if rejects and not single:
        atomic.write_jsonl(out / "rejects.jsonl", rejects)
    if not single:
        print(f"jaxcodec {mode}: {done} written to {out}, {len(items) - len(todo)} already there, "
              f"{len(rejects)} skipped")
    return 1 if rejects else 0


def _run_batch(tokenizer, batch, mode: str, n_q: int, out: Path, single: bool, dtype) -> None:
    """One batch of same-bucket items: padded to their longest (still inside the bucket), run, trimmed."""
    if mode == "decode":
        frames = max(codes.shape[1] for _, codes in batch)
        padded = np.stack([np.pad(c, ((0, 0), (0, frames - c.shape[1]))) for _, c in batch])
        wavs = tokenizer.decode(padded[:, :n_q])
        for (name, codes), wav in zip(batch, wavs, strict=True):
            audio.write(_output(out, name, single, ".wav"), wav[: codes.shape[1] * tokenizer.hop_length],
                        tokenizer.sample_rate)
        return
    longest = max(wav.size for _, wav in batch)
    padded = np.stack([np.pad(wav, (0, longest - wav.size)) for _, wav in batch])
    codes = tokenizer.encode(padded, n_q)
    if mode == "resynth":
        wavs = tokenizer.decode(codes, num_samples=longest)
    for i, (name, wav) in enumerate(batch):
        frames = -(-wav.size // tokenizer.hop_length)
        target = _output(out, name, single, CODES_SUFFIX if mode == "encode" else ".wav")
        if mode == "encode":
            with atomic.replacing(target) as tmp, open(tmp, "wb") as f:
                np.save(f, codes[i, :, :frames].astype(dtype), allow_pickle=False)
        else:
            audio.write(target, wavs[i, : wav.size], tokenizer.sample_rate)


def add_arguments(parser: argparse.ArgumentParser, mode: str) -> None:
    what = {"encode": "audio file, folder or manifest.jsonl", "decode": "codes .npy file or folder of them",
            "resynth": "audio file, folder or manifest.jsonl"}[mode]
    parser.add_argument("input", help=what)
    parser.add_argument("-o", "--out", required=True,
                        help="output file for one input, else a folder (names follow the inputs)")
    parser.add_argument("--checkpoint", required=True, help="training or imported workdir, or an exported file")
    parser.add_argument("--step", help="checkpoint step: a number, 'best' or (default) the latest")
    parser.add_argument("--n-q", type=int, help="RVQ levels to use (bitrate = 50 · n_q tokens/s); default all")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per batch (same-length groups)")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace, mode: str) -> int:
    try:
        return run(args, mode)
    except (InferenceError, FileNotFoundError) as err:
        print(f"jaxcodec {mode}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # a single input that cannot be used, or a checkpoint that cannot load
        print(f"jaxcodec {mode}: error: {err}", file=sys.stderr)
        return 1

