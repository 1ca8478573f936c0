"""The index of a shard set: each shard's part-index (its commit marker), their merge into index.json and
rejects.jsonl, and loading index.json with its JSON types checked."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from jaxcodec import atomic
from jaxcodec.data.shards.errors import ShardError
from jaxcodec.data.shards.format import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_NAME,
    REJECTS_NAME,
    SHARD_FILE_RE,
    normalise_index,
    part_name,
    shard_name,
)


def read_part(directory: Path, index: int, count: int) -> dict | None:
    """The committed part-index of one shard, or None when the shard is not complete."""
    part_path = directory / part_name(index, count)
    if not part_path.is_file() or not (directory / shard_name(index, count)).is_file():
        return None
    try:
        part = json.loads(part_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ShardError(f"{part_path.name}: not valid JSON ({err})") from None
    return normalise_index(part) if isinstance(part, dict) else part



# --- index -----------------------------------------------------------------------------------------------------

def shard_count(directory: Path) -> int | None:
    counts = {int(m.group(2)) for p in directory.iterdir() if (m := SHARD_FILE_RE.match(p.name))}
    counts |= {int(p.stem.split("-of-")[1]) for p in directory.glob("shard-*-of-*.json")}
    if len(counts) > 1:
        raise ShardError(f"{directory} mixes shard sets of sizes {sorted(counts)}; use a fresh directory")
    return counts.pop() if counts else None


def merge_index(directory: str | os.PathLike, finalize: Callable[[dict, Path], dict] | None = None) -> dict:
    """Combines every part-index into index.json and rejects.jsonl; raises ShardError naming the missing shards.
    `finalize(index, directory)`, when given, completes the merged index before it is written (precompute records
    the speaker teacher's calibration, which needs every shard): index.json appears once, complete."""
    directory = Path(directory)
    count = shard_count(directory)
    if count is None:
        raise ShardError(f"no shards in {directory}")
    parts = [read_part(directory, i, count) for i in range(count)]
    missing = [i for i, part in enumerate(parts) if part is None]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
        raise ShardError(f"{len(missing)} of {count} shards are not complete (shard index {shown}); "
                         f"run precompute with those --shard-index values, then merge again")
    first = parts[0]
    for part in parts[1:]:
        for key in ("provenance", "fields", "source"):
            if part[key] != first[key]:
                raise ShardError(f"{part['file']} and {first['file']} disagree on {key}; "
                                 f"they were computed with different settings")
    shards = [{key: part[key] for key in ("file", "records", "bytes", "sha256", "audio_seconds", "ids", "splits",
                                          "num_samples", "speakers") if key in part}  # a legacy part: no speakers
              for part in parts]
    rejects = [reject for part in parts for reject in part["rejects"]]
    splits: dict[str, int] = {}
    for part in parts:
        for split in part["splits"]:
            splits[split] = splits.get(split, 0) + 1
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "num_records": sum(part["records"] for part in parts),
        "audio_seconds": round(sum(part["audio_seconds"] for part in parts), 3),
        "splits": dict(sorted(splits.items())),
        "num_rejects": len(rejects),
        "fields": first["fields"],
        "provenance": first["provenance"],
        "source": first["source"],
        "code_versions": sorted({part.get("code_version", "") for part in parts}),
        "shards": shards,
    }
    if finalize is not None:
        index = finalize(index, directory)
    atomic.write_jsonl(directory / REJECTS_NAME, rejects)
    atomic.write_json(directory / INDEX_NAME, index)
    return index


def load_index(directory: str | os.PathLike) -> dict:
    path = Path(directory) / INDEX_NAME
    if not path.is_file():
        raise ShardError(f"{path} not found: not a shard set, or its precompute has not finished "
                         f"(`jaxcodec precompute --out {directory} --merge-index` merges finished parts)")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ShardError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(index, dict):
        raise ShardError(f"{path}: must hold a JSON object, got a {type(index).__name__}")
    if index.get("format") != FORMAT or index.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: format {index.get('format')!r} v{index.get('format_version')} is not "
                         f"{FORMAT} v{FORMAT_VERSION}")
    if problem := _index_problem(index):
        raise ShardError(f"{path}: {problem} (damaged or edited; `jaxcodec precompute --out {directory} "
                         f"--merge-index` rebuilds it from the parts)")
    return normalise_index(index)


# What merge_index writes and readers use, by JSON type: an index.json lacking one is refused by load_index, in
# one line, before any command indexes into it.
INDEX_TYPES = {"num_records": int, "audio_seconds": int | float, "splits": dict, "num_rejects": int, "fields": dict,
               "provenance": dict, "shards": list}
SHARD_ENTRY_TYPES = {"file": str, "records": int, "bytes": int, "sha256": str, "ids": list, "num_samples": list}
FIELD_SPEC_TYPES = {"dtype": str, "shape": list}


def _json_type(kind) -> str:
    names = {int: "JSON integer", float: "JSON number", int | float: "JSON number", str: "JSON string",
             list: "JSON array", dict: "JSON object", bool: "JSON boolean", type(None): "JSON null"}
    return names.get(kind, kind.__name__)


def _index_problem(index: dict) -> str | None:
    """The first key of a parsed index.json that is missing or of the wrong JSON type, or None."""
    def wrong(mapping: dict, types: dict, where: str) -> str | None:
        for key, kind in types.items():
            if key not in mapping:
                return f"{where}has no {key!r}"
            if not isinstance(mapping[key], kind) or isinstance(mapping[key], bool):
                return f"{where}{key!r} is a {_json_type(type(mapping[key]))}, not a {_json_type(kind)}"
        return None

    if problem := wrong(index, INDEX_TYPES, ""):
        return problem
    for key, spec in index["fields"].items():
        if not isinstance(spec, dict):
            return f"field {key!r} is a {_json_type(type(spec))}, not a JSON object"
        if problem := wrong(spec, FIELD_SPEC_TYPES, f"field {key!r} "):
            return problem
    for i, shard in enumerate(index["shards"]):
        if not isinstance(shard, dict):
            return f"shards[{i}] is a {_json_type(type(shard))}, not a JSON object"
        if problem := wrong(shard, SHARD_ENTRY_TYPES, f"shards[{i}] "):
            return problem
    return None


