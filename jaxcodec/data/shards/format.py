"""The shard format: file names, constants and the record encoding (a msgpack map whose numpy arrays are maps
{"__array__": dtype, "shape": [...], "data": bytes}, little-endian), and the field specs a set declares."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import msgpack
import numpy as np

from jaxcodec.data.shards.errors import ShardError

FORMAT = "jaxcodec-shards"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
REJECTS_NAME = "rejects.jsonl"
# group_size:1 gives each record its own chunk (grain's random access wants it); uncompressed because float16
# features barely compress and decompression would cost the input pipeline CPU time on every read.
WRITER_OPTIONS = "group_size:1,uncompressed"
ARRAY_KEY = "__array__"
# Only plain numeric dtypes may cross the boundary: nothing that would need pickle (object) or be ambiguous.
ALLOWED_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64", "bool"})
SHARD_FILE_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})\.array_record$")
HASH_BLOCK = 1 << 22

# The teachers' roles (teachers/registry.py), the provenance's keys for the two teachers: content (HuBERT, or
# PocketSphinx phones) and speaker (ECAPA-TDNN, or resemblyzer).
CONTENT = "content"
SPEAKER = "speaker"
# Their record fields: the content teacher's frames [T, D] (named after its role), the speaker teacher's utterance
# embedding [E] (not "speaker": records already carry the speaker's label under that key) and its optional frame
# features [T, C].
SPEAKER_EMBEDDING = "speaker_embedding"
SPEAKER_FRAMES = "speaker_frames"
# Shard sets written before the roles had names called fields and provenance entries after the paper's models,
# whatever model filled them; they are read under the new names (decode_record, normalise_index).
LEGACY_FIELDS = {"hubert": CONTENT, "ecapa": SPEAKER_EMBEDDING, "ecapa_frames": SPEAKER_FRAMES}
LEGACY_ROLES = {"hubert": CONTENT, "ecapa": SPEAKER}


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.array_record"


def part_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.json"


# --- records ---------------------------------------------------------------------------------------------------

def encode_record(record: dict[str, Any]) -> bytes:
    def pack(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            dtype = value.dtype.newbyteorder("<") if value.dtype.byteorder == ">" else value.dtype
            if dtype.name not in ALLOWED_DTYPES:
                raise ShardError(f"dtype {value.dtype} cannot be stored in a shard")
            array = np.ascontiguousarray(value, dtype=dtype)
            return {ARRAY_KEY: dtype.name, "shape": list(array.shape), "data": array.tobytes()}
        if isinstance(value, np.generic):
            return value.item()
        return value

    return msgpack.packb({key: pack(value) for key, value in record.items()}, use_bin_type=True)


def decode_record(raw: bytes) -> dict[str, Any]:
    record = msgpack.unpackb(raw, raw=False)
    if not isinstance(record, dict):
        raise ShardError("record is not a msgpack map")
    for key, value in record.items():
        if isinstance(value, dict) and ARRAY_KEY in value:
            dtype = value[ARRAY_KEY]
            if dtype not in ALLOWED_DTYPES:
                raise ShardError(f"field {key!r}: dtype {dtype!r} is not allowed")
            array = np.frombuffer(value["data"], dtype=np.dtype(dtype).newbyteorder("<"))
            record[key] = array.reshape(value["shape"]).astype(dtype, copy=False)
    return _renamed(record, LEGACY_FIELDS)


def _renamed(mapping: dict, names: dict[str, str]) -> dict:
    """`mapping` with the keys of `names` renamed, order kept."""
    if not any(key in names for key in mapping):
        return mapping
    return {names.get(key, key): value for key, value in mapping.items()}


def normalise_index(index: dict) -> dict:
    """An index.json or part-index with its `fields` and `provenance` under today's names (a legacy set's
    `hubert`/`ecapa` entries renamed: LEGACY_FIELDS, LEGACY_ROLES); other keys untouched."""
    out = dict(index)
    for key, names in (("fields", LEGACY_FIELDS), ("provenance", LEGACY_ROLES)):
        if isinstance(out.get(key), dict):
            out[key] = _renamed(out[key], names)
    return out


def field_spec(record: dict[str, Any]) -> dict[str, dict]:
    """dtype and shape of each array field; leading axes that vary between records (samples, frames) are named."""
    spec = {}
    for key, value in record.items():
        if isinstance(value, np.ndarray):
            shape: list[int | str] = list(value.shape)
            if key == "audio":
                shape[0] = "samples"
            elif value.ndim == 2:
                shape[0] = "frames"
            spec[key] = {"dtype": value.dtype.name, "shape": shape}
    return spec


def matches_spec(value: Any, spec: dict) -> bool:
    if not isinstance(value, np.ndarray) or value.dtype.name != spec["dtype"] or value.ndim != len(spec["shape"]):
        return False
    return all(isinstance(want, str) or want == have for want, have in zip(spec["shape"], value.shape, strict=True))


# --- files -----------------------------------------------------------------------------------------------------

def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()

