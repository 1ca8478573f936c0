"""`jaxcodec tokenize`: a corpus (manifest) → token shards for speech language-model training.

Same shard format and plan as the teachers' precompute (`jaxcodec.data.shards`): ArrayRecord files
`shard-00000-of-00004.array_record`, one msgpack record per utterance, each shard written under a temporary name
and committed with its part-index, `index.json` merged when every shard is complete. A record holds

    id, split, speaker (when the manifest has one), codes int16 [frames, n_q] (frame-major, the shard format's
    convention for variable-length fields; `codes.T` is the tokenizer's [n_q, T]), num_samples and sample_rate
    of the 16 kHz audio that was encoded, duration in seconds.

The index's provenance names the codec: checkpoint path and step, the sha256 of its weights (every variable of
the codec, in name order, as `jaxcodec export` would write them), n_q, codebook size and frame rate. A rerun skips
complete shards; `--num-shards N --shard-index I` splits the work over processes or hosts exactly as precompute
does (round-robin in id order), and whichever process completes the last shard merges the index. An unreadable
file is recorded in the shard's rejects with its reason.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sys
from pathlib import Path

import numpy as np

from jaxcodec import audio
from jaxcodec.data import manifest as manifest_lib
from jaxcodec.data import shards

HELP = ("a manifest → token shards (ArrayRecord, int16 codes) for language-model training; resumable, "
        "splittable over hosts")

TARGET_SHARD_FRAMES = 50 * 3600 * 10  # default shard size: 10 h of tokens (8 levels: 29 MB of int16 codes)


def default_num_shards(entries: list[dict]) -> int:
    frames = sum(e.get("duration", 0.0) for e in entries) * 50
    return max(1, round(frames / TARGET_SHARD_FRAMES))


def weights_sha256(tokenizer) -> str:
    """sha256 over the codec's variables (name, dtype, shape, bytes) in name order: the same for a workdir and for
    its export, and different for any change of weights or codebooks."""
    from jaxcodec.interop import convert

    digest = hashlib.sha256()
    for name, value in sorted(convert.export_native(tokenizer.codec()).items()):
        value = np.ascontiguousarray(value)
        digest.update(f"{name}:{value.dtype.name}:{list(value.shape)}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _record(entry: dict, codes_qt: np.ndarray, num_samples: int, sample_rate: int) -> dict:
    record = {"id": entry["id"], "split": entry.get("split", "train"),
              "codes": np.ascontiguousarray(codes_qt.T.astype(np.int16)), "num_samples": num_samples,
              "sample_rate": sample_rate, "duration": round(num_samples / sample_rate, 3)}
    if entry.get("speaker") is not None:
        record["speaker"] = str(entry["speaker"])
    return record


def fill_shard(tokenizer, n_q: int, batch_size: int, writer: shards.ShardWriter, entries: list[dict]) -> list[dict]:
    """Encodes one shard's entries in batches and writes their records in id order; returns the rejects."""
    from jaxcodec.commands.encode import loaded_batches

    failed, by_id = [], {}

    def load(entry):
        wav, _ = audio.read(entry["path"], tokenizer.sample_rate)
        audio.check_finite(wav)
        return wav

    estimate = lambda entry: (int(entry.get("duration", 0.0) * tokenizer.sample_rate), 0)  # noqa: E731
    for batch in loaded_batches(entries, estimate, load, lambda wav: wav.size, tokenizer, batch_size, failed):
        longest = max(wav.size for _, wav in batch)
        codes = tokenizer.encode(np.stack([np.pad(w, (0, longest - w.size)) for _, w in batch]), n_q)
        for (entry, wav), codes_qt in zip(batch, codes, strict=True):
            frames = -(-wav.size // tokenizer.hop_length)
            # records are small (codes only): kept until the shard is written in id order
            by_id[entry["id"]] = _record(entry, codes_qt[:, :frames], wav.size, tokenizer.sample_rate)
    rejects = [{"id": e["id"], "path": e.get("path"), "reason": reason} for e, reason in failed]
    for entry in entries:  # id order inside the shard, whatever the batching order was
        if entry["id"] in by_id:
            writer.write(by_id[entry["id"]])
    return rejects


def run(args: argparse.Namespace, log=print) -> dict | None:
    """Tokenizes the shards this process is responsible for; merges the index when all are committed. Returns the
    index when it was merged, else None. Refused (OutputLockError) while another run writes the same shards."""
    with shards.writing(args.out, args.shard_index):
        return _run(args, log)


def _run(args: argparse.Namespace, log) -> dict | None:
    import jaxcodec

    entries = shards.select(manifest_lib.read(args.manifest), args.splits, args.manifest, "tokenize")
    plan = shards.plan(args.out, entries, args.num_shards, args.shard_index, default_num_shards)
    log(f"{len(entries)} utterances in {plan.count} shards; this process: {len(plan.mine)} shards, "
        f"{plan.done} already complete")
    if plan.todo:
        step = args.step if args.step in (None, "best") else int(args.step)
        tokenizer = jaxcodec.load(args.checkpoint, step)
        n_q = args.n_q or tokenizer.n_q
        if not 1 <= n_q <= tokenizer.n_q:
            raise shards.ShardError(f"--n-q must be in 1..{tokenizer.n_q}, got {n_q}")
        provenance = {"codec": {"checkpoint": str(Path(args.checkpoint).resolve()), "step": tokenizer.step,
                                "weights_sha256": weights_sha256(tokenizer), "n_q": n_q,
                                "codebook_size": tokenizer.codebook_size, "frame_rate": tokenizer.frame_rate,
                                "sample_rate": tokenizer.sample_rate}}
        source = {"manifest_sha256": hashlib.sha256(Path(args.manifest).read_bytes()).hexdigest(),
                  "num_shards": plan.count, "splits": sorted(args.splits or [])}
        fields = {"codes": {"dtype": "int16", "shape": ["frames", n_q]}}
        shards.check_existing(plan.out, plan.count, provenance, source, fields)
        shards.write_planned(plan, provenance, source, fields,
                             functools.partial(fill_shard, tokenizer, n_q, args.batch_size), log)
    return shards.merge_when_complete(args.out, log)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest.jsonl (jaxcodec manifest)")
    parser.add_argument("--checkpoint", required=True, help="training or imported workdir, or an exported file")
    parser.add_argument("--step", help="checkpoint step: a number, 'best' or (default) the latest")
    parser.add_argument("--out", required=True, help="shard directory")
    parser.add_argument("--n-q", type=int, help="RVQ levels to store (default all)")
    parser.add_argument("--splits", nargs="*", help="only these manifest splits (default all)")
    parser.add_argument("--num-shards", type=int, help="shard count (default: ~10 h of audio per shard)")
    parser.add_argument("--shard-index", type=int, help="this process's shard (with --num-shards): multi-host")
    parser.add_argument("--batch-size", type=int, default=16, help="utterances per batch (same-length groups)")


def main(args: argparse.Namespace) -> int:
    try:
        run(args)
    except (shards.ShardError, manifest_lib.ManifestError, FileNotFoundError, ValueError) as err:
        print(f"jaxcodec tokenize: error: {err}", file=sys.stderr)
        return 2
    return 0
