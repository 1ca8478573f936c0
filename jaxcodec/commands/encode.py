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
import contextlib
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from jaxcodec import atomic, audio, output_lock

HELPS = {"encode": "audio → RVQ codes (.npy int16 [n_q, T]): a file, a folder or a manifest",
         "decode": "codes (.npy) → 16 kHz WAV: a file or a folder",
         "resynth": "audio → codes → audio (WAV), to listen to the codec at a bitrate"}

CODES_SUFFIX = ".npy"
# The largest codes file decode accepts: 1 GiB of int16 codes is ~370 h at 8 levels × 50 frames/s, far beyond one
# utterance; a header claiming more is damage, refused before anything is allocated from it.
MAX_CODES_BYTES = 1 << 30


class InferenceError(ValueError):
    """Unusable input arguments (the message is the one line a user reads)."""


def _inputs(source: Path, suffixes: tuple[str, ...]) -> tuple[list[tuple[str, Path]], list]:
    """(name, path) pairs: a file; every file with one of `suffixes` under a folder (name = relative path without
    suffix); or a manifest's entries (name = id). Second, the folders that could not be listed, as rejects
    ((name, path), reason)."""
    from jaxcodec.data import manifest

    if source.is_dir():
        files, unreadable = manifest.find_files(source, suffixes)
        unlisted = [((str(Path(folder["path"]).relative_to(source)), Path(folder["path"])), folder["reason"])
                    for folder in unreadable]
        return [(str(p.relative_to(source).with_suffix("")), p) for p in files], unlisted
    if source.suffix == ".jsonl":
        return [(entry["id"], Path(entry["path"])) for entry in manifest.read(source)], []
    if source.is_file():
        return [(source.stem, source)], []
    raise InferenceError(f"{source}: no such file or folder")


def _output(out: Path, name: str, single: bool, suffix: str) -> Path:
    return out if single else out / f"{name}{suffix}"


def codes_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) from a .npy header, checked against the file before any data is read: no Python objects,
    exactly the bytes the file holds after the header, at most MAX_CODES_BYTES; else ValueError naming the problem.
    (read_codes then checks the dtype, shape and values of what it loads.)"""
    from numpy.lib import format as npy

    readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    with open(path, "rb") as f:
        try:
            version = npy.read_magic(f)
            if version not in readers:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, dtype = readers[version](f)
        except ValueError as err:
            raise ValueError(f"not a numpy codes file ({str(err).splitlines()[0]})") from None
        data_bytes = os.fstat(f.fileno()).st_size - f.tell()
    if dtype.hasobject:
        raise ValueError("not a numpy codes file (it holds Python objects)")
    declared = math.prod(shape) * dtype.itemsize
    if declared > MAX_CODES_BYTES:
        raise ValueError(f"header declares {declared} bytes of codes, more than {MAX_CODES_BYTES} (damaged header)")
    if declared != data_bytes:
        raise ValueError(f"header declares {declared} bytes of codes, the file holds {data_bytes} (truncated?)")
    return dtype, shape


def read_codes(path: Path, n_q: int, codebook_size: int) -> np.ndarray:
    """An int [n_q', T] codes file (n_q' ≤ n_q, values in range), or ValueError naming the problem."""
    codes_header(path)
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
            shape = codes_header(path)[1]
            return (shape[1] * hop, shape[0]) if len(shape) == 2 else (0, 0)
        header = audio.info(path)
        return -(-header.frames * sample_rate // header.sample_rate), 0
    except (audio.AudioError, OSError, ValueError):
        return 0, 0


def run(args: argparse.Namespace, mode: str) -> int:
    source, out = Path(args.input), Path(args.out)
    suffixes = (CODES_SUFFIX,) if mode == "decode" else audio.EXTENSIONS
    items, unlisted = _inputs(source, suffixes)
    if not items:
        unread = f"; {len(unlisted)} folders could not be read, e.g. {unlisted[0][0][1]}" if unlisted else ""
        raise InferenceError(f"{source}: no {'codes' if mode == 'decode' else 'audio'} files found{unread}")
    single = source.is_file() and source.suffix != ".jsonl"
    if single and out.is_dir():  # -o names the output file for one input (its help and the README say so)
        raise InferenceError(f"-o {out} is a folder; for one input -o names the output file, e.g. "
                             f"{out / source.stem}{CODES_SUFFIX if mode == 'encode' else '.wav'}")
    if not single and out.exists() and not out.is_dir():
        raise InferenceError(f"-o {out} is a file; for a folder or manifest -o names the output folder")
    # An output folder is one run's at a time (jaxcodec.output_lock); a single output file is one atomic rename.
    with contextlib.nullcontext() if single else output_lock.held(out):
        return _convert(args, mode, items, single, out, unlisted)


def _convert(args: argparse.Namespace, mode: str, items: list[tuple[str, Path]], single: bool, out: Path,
             unlisted: list) -> int:
    from tqdm import tqdm

    import jaxcodec

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
        load = lambda item: _read_audio(item[1], tokenizer.sample_rate)  # noqa: E731
        length_of, kind_of = (lambda wav: wav.size), None
    dtype = np.int16 if tokenizer.codebook_size <= np.iinfo(np.int16).max + 1 else np.int32
    failed: list = list(unlisted)  # ((name, path), reason); unreadable folders first
    done = 0
    try:
        with tqdm(total=len(todo), unit="file", disable=args.quiet or single, desc=mode) as progress:
            for batch in loaded_batches(todo, lambda item: estimates[item[1]], load, length_of, tokenizer,
                                        args.batch_size, failed, kind_of):
                _run_batch(tokenizer, [(name, data) for (name, _), data in batch], mode, n_q, out, single, dtype)
                done += len(batch)
                progress.update(len(batch))
    finally:  # the rejects found so far are reported and kept even when a later batch fails
        rejects = [{"id": name, "path": str(path), "reason": reason} for (name, path), reason in failed]
        for reject in rejects:
            print(f"jaxcodec {mode}: skipped {reject['path']}: {reject['reason']}", file=sys.stderr)
        if rejects and not single:
            atomic.write_jsonl(out / "rejects.jsonl", rejects)
    if not single:
        print(f"jaxcodec {mode}: {done} written to {out}, {len(items) - len(todo)} already there, "
              f"{len(rejects)} skipped")
    return 1 if rejects else 0


def _read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """The file's samples, checked as they are read (not after batching, where one bad file would stop the run):
    audio.read refuses unreadable and empty files, audio.check_finite NaN/Inf samples."""
    wav = audio.read(path, sample_rate)[0]
    audio.check_finite(wav)
    return wav


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

