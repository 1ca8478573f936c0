"""`jaxcodec shards verify`: checksums, record counts, parts against index.json, and (deep) every record."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import msgpack
import numpy as np

from jaxcodec.data.shards.errors import ShardError
from jaxcodec.data.shards.format import REJECTS_NAME, decode_record, matches_spec, part_name, sha256_file, shard_name
from jaxcodec.data.shards.index import load_index, read_part
from jaxcodec.data.shards.provenance import as_written_by_shards


def verify(directory: str | os.PathLike, manifest_ids: Iterable[str] | None = None, deep: bool = True,
           progress: bool = False) -> tuple[list[str], list[str]]:
    """Checks a shard set: every file's checksum and record count, each part agreeing with index.json, and (deep)
    every record's fields, dtypes, shapes, frame counts and finiteness. With `manifest_ids`, every utterance of the
    manifest must be in exactly one shard or in the rejects. Returns (problems, notes); problems are failures."""
    from array_record.python.array_record_module import ArrayRecordReader

    directory = Path(directory)
    problems: list[str] = []
    notes: list[str] = []
    try:
        index = load_index(directory)
    except ShardError as err:
        return [str(err)], notes
    prov, fields = index["provenance"], index["fields"]
    hop = prov.get("hop_length")
    shards = index["shards"]
    count = len(shards)
    seen: dict[str, str] = {}
    for i, shard in enumerate(shards):
        name = shard["file"]
        if name != shard_name(i, count):
            problems.append(f"index.json lists {name} at position {i}, expected {shard_name(i, count)}")
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        if path.stat().st_size != shard["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, index.json says {shard['bytes']}")
        if sha256_file(path) != shard["sha256"]:
            problems.append(f"{name}: sha256 differs from index.json (file changed or corrupt)")
            continue
        part = read_part(directory, i, count)
        if part is None:
            notes.append(f"{part_name(i, count)}: missing (index.json still describes the shard)")
        elif (part["sha256"] != shard["sha256"] or part["provenance"] != as_written_by_shards(prov)
              or part["fields"] != fields):
            problems.append(f"{part_name(i, count)} disagrees with index.json")
        for utt in shard["ids"]:
            if utt in seen:
                problems.append(f"utterance {utt!r} is in both {seen[utt]} and {name}")
            seen[utt] = name
        reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
        try:
            if shard["records"] != reader.num_records() or not (
                    len(shard["ids"]) == len(shard["num_samples"]) == shard["records"]):
                problems.append(f"{name}: {reader.num_records()} records, index.json says {shard['records']}")
                continue
            if deep:
                for local in range(shard["records"]):
                    problems += _check_record(name, local, reader.read([local])[0], shard, fields, hop)
        finally:
            reader.close()
        if progress:
            print(f"  {name}: {shard['records']} records checked", flush=True)
    rejects_path = directory / REJECTS_NAME
    rejected: set[str] = set()
    if rejects_path.is_file():
        for number, line in enumerate(rejects_path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                row = "not JSON"
            if isinstance(row, dict):
                rejected.add(row.get("id", row.get("path")))
            elif row is not None:
                problems.append(f"{REJECTS_NAME} line {number}: not a JSON object")
        if len(rejected) != index.get("num_rejects", len(rejected)):
            problems.append(f"{REJECTS_NAME}: {len(rejected)} rejects, index.json says {index['num_rejects']}")
    both = sorted(rejected & set(seen))
    if both:
        problems.append(f"{len(both)} utterances are both in a shard and rejected, e.g. {both[0]!r}")
    if manifest_ids is not None:
        wanted = set(manifest_ids)
        lost = sorted(wanted - set(seen) - rejected)
        extra = sorted(set(seen) - wanted)
        if lost:
            problems.append(f"{len(lost)} manifest utterances are in no shard and not rejected, e.g. {lost[0]!r}")
        if extra:
            problems.append(f"{len(extra)} shard utterances are not in the manifest, e.g. {extra[0]!r}")
    stray = sorted(p.name for p in directory.glob(".shard-*.tmp-*"))
    if stray:
        notes.append(f"{len(stray)} temporary files of interrupted writes (harmless; a rerun removes them)")
    return problems, notes


def _check_record(name: str, local: int, raw: bytes, shard: dict, fields: dict, hop: int | None) -> list[str]:
    where = f"{name} record {local}"
    try:
        record = decode_record(raw)
    # TypeError/KeyError: an array entry whose data, dtype or shape is of the wrong type, or missing.
    except (ShardError, ValueError, TypeError, KeyError, msgpack.ExtraData, msgpack.FormatError) as err:
        return [f"{where}: undecodable ({err})"]
    problems = []
    if record.get("id") != shard["ids"][local]:
        problems.append(f"{where}: id {record.get('id')!r}, index.json says {shard['ids'][local]!r}")
    for key, spec in fields.items():
        value = record.get(key)
        if not matches_spec(value, spec):
            problems.append(f"{where}: field {key!r} does not match {spec['dtype']}{spec['shape']}")
        elif value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            problems.append(f"{where}: field {key!r} has NaN/Inf values")
    audio = record.get("audio")
    if isinstance(audio, np.ndarray) and len(audio) != shard["num_samples"][local]:
        problems.append(f"{where}: {len(audio)} samples, index.json says {shard['num_samples'][local]}")
    if hop and isinstance(audio, np.ndarray):
        frames = -(-len(audio) // hop)
        for key, spec in fields.items():
            value = record.get(key)
            if spec["shape"][:1] == ["frames"] and isinstance(value, np.ndarray) and len(value) != frames:
                problems.append(f"{where}: {key} has {len(value)} frames, {len(audio)} samples need {frames}")
    return problems
