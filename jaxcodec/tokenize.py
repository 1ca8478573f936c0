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
import hashlib
import sys
from pathlib import Path

import numpy as np

from jaxcodec import audio
from jaxcodec.data import manifest as manifest_lib
from jaxcodec.data import shards

TARGET_SHARD_FRAMES = 50 * 3600 * 10  # default shard size: 10 h of tokens (8 levels: 29 MB of int16 codes)


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


def run_shard(tokenizer, entries: list[dict], out: Path, index: int, count: int, n_q: int, batch_size: int,
              provenance: dict, source: dict, fields: dict) -> dict:
    from jaxcodec.inference import loaded_batches

    shards.remove_stale_temporaries(out, index, count)
    writer = shards.ShardWriter(out, index, count, fields)
    failed, by_id = [], {}

    def load(entry):
        wav, _ = audio.read(entry["path"], tokenizer.sample_rate)
        if not np.all(np.isfinite(wav)):
            raise audio.AudioError("NaN/Inf samples")
        return wav

    try:
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
        return writer.commit(provenance, rejects, source)
    except BaseException:
        writer.abort()
        raise


def run(args: argparse.Namespace, log=print) -> dict | None:
    """Tokenizes the shards this process is responsible for; merges the index when all are committed. Returns the
    index when it was merged, else None. Refused (OutputLockError) while another run writes the same shards."""
    with shards.writing(args.out, args.shard_index):
        return _run(args, log)


def _run(args: argparse.Namespace, log) -> dict | None:
    import jaxcodec

    entries = manifest_lib.read(args.manifest)
    if args.splits:
        entries = [e for e in entries if e.get("split") in args.splits]
    if not entries:
        raise shards.ShardError(f"{args.manifest}: no utterances to tokenize")
    frames = sum(e.get("duration", 0.0) for e in entries) * 50
    count = args.num_shards or max(1, round(frames / TARGET_SHARD_FRAMES))
    if args.shard_index is not None and args.num_shards is None:
        raise shards.ShardError("--shard-index needs --num-shards, so that every process splits the manifest alike")
    if args.shard_index is not None and not 0 <= args.shard_index < count:
        raise shards.ShardError(f"--shard-index {args.shard_index} is outside 0..{count - 1}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    existing = shards.shard_count(out)
    if existing is not None and existing != count:
        raise shards.ShardError(f"{out} holds a set of {existing} shards; this run asks for {count} "
                                f"(use --num-shards {existing}, or a fresh --out)")
    mine = [args.shard_index] if args.shard_index is not None else list(range(count))
    todo = [i for i in mine if shards.read_part(out, i, count) is None]
    log(f"{len(entries)} utterances in {count} shards; this process: {len(mine)} shards, "
        f"{len(mine) - len(todo)} already complete")
    if todo:
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
                  "num_shards": count, "splits": sorted(args.splits or [])}
        fields = {"codes": {"dtype": "int16", "shape": ["frames", n_q]}}
        shards.check_existing(out, count, provenance, source, fields)
        assigned = shards.assign(entries, count)
        for i in todo:
            part = run_shard(tokenizer, assigned[i], out, i, count, n_q, args.batch_size, provenance, source, fields)
            log(f"{part['file']}: {part['records']} utterances, {len(part['rejects'])} rejected")
    try:
        index = shards.merge_index(out)
    except shards.ShardError as err:
        log(f"index not merged yet: {err}")
        return None
    log(f"index.json: {index['num_records']} utterances ({index['audio_seconds'] / 3600:.2f} h), "
        f"{index['num_rejects']} rejected (see {shards.REJECTS_NAME})")
    return index


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
