"""The shard format: where the PyTorch teachers (writers) and the JAX trainer (reader) meet. numpy, msgpack and
array_record only: no torch, no jax, no pickle.

A shard set is a directory:
- `shard-00000-of-00016.array_record` …: ArrayRecord files (group size 1, for random access), one record per
  utterance: a msgpack map whose numpy arrays are maps {"__array__": dtype, "shape": [...], "data": bytes}
  (little-endian) and whose other values are plain strings and numbers.
- `shard-00000-of-00016.json` …: one part-index per shard, written after its shard file is complete and renamed.
  The part is the shard's commit marker: a shard file without its part is an interrupted write and is redone.
  It holds the shard's sha256, record count, per-record ids/splits/lengths, rejected utterances with their
  reasons, field dtypes and shapes, and the teachers' provenance.
- `index.json`: the merge of all parts (written once every part exists) and `rejects.jsonl`, every utterance of
  the manifest that is in no shard, with its reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from jaxcodec import atomic, output_lock

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
_SHARD_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})\.array_record$")
HASH_BLOCK = 1 << 22


class ShardError(ValueError):
    """A shard set that is missing, incomplete, corrupt, or does not match what the caller needs."""


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
    return record


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


def read_part(directory: Path, index: int, count: int) -> dict | None:
    """The committed part-index of one shard, or None when the shard is not complete."""
    part_path = directory / part_name(index, count)
    if not part_path.is_file() or not (directory / shard_name(index, count)).is_file():
        return None
    try:
        return json.loads(part_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ShardError(f"{part_path.name}: not valid JSON ({err})") from None


def remove_stale_temporaries(directory: Path, index: int, count: int) -> list[str]:
    """Deletes what an interrupted write of this shard left behind (temporary files, a shard without its part)."""
    removed = []
    for name in (shard_name(index, count), part_name(index, count)):
        for tmp in directory.glob(atomic.tmp_prefix(name) + "*"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    shard = directory / shard_name(index, count)
    if shard.exists() and not (directory / part_name(index, count)).exists():
        shard.unlink()
        removed.append(shard.name)
    return removed


def assign(entries: list[dict], num_shards: int) -> list[list[dict]]:
    """Round-robin in id order: equal counts, similar durations, and independent of the manifest's line order, so
    every process of a multi-host run computes the same plan."""
    ordered = sorted(entries, key=lambda e: e["id"])
    return [ordered[i::num_shards] for i in range(num_shards)]


def check_existing(out: Path, count: int, provenance: dict, source: dict, fields: dict) -> None:
    """Refuses to mix shards made with other models, settings or manifest into one set."""
    for i in range(count):
        part = read_part(out, i, count)
        if part is None:
            continue
        for key, mine in (("provenance", provenance), ("source", source), ("fields", fields)):
            if part[key] != mine:
                diff = sorted(k for k in set(part[key]) | set(mine) if part[key].get(k) != mine.get(k))
                raise ShardError(f"{out} already holds shards made with different {key} "
                                 f"({', '.join(diff)}); use a fresh --out")


SHARD_LOCK_GLOB = ".jaxcodec.shard-*.lock"


def shard_lock_name(index: int) -> str:
    return SHARD_LOCK_GLOB.replace("*", f"{index:05d}")


@contextlib.contextmanager
def writing(out: str | os.PathLike, shard_index: int | None) -> Iterator[None]:
    """Holds the locks of a run writing the shard set `out` (jaxcodec.output_lock), refusing in one line when
    another run writes it. A run of the whole set holds the set's lock; one process of a job array
    (`--shard-index I`, on any host) holds its shard's lock only, so that the array's processes run side by side.
    Each kind looks for the other once it holds its own, so of two that start together at least one sees the
    other: a whole run refuses while a shard's process runs, and a shard's process while a whole run does."""
    out = Path(out)
    if shard_index is None:
        with output_lock.held(out):
            for lock in sorted(out.glob(SHARD_LOCK_GLOB)):
                if (holder := output_lock.live_holder(lock)) is not None:
                    raise output_lock.OutputLockError(
                        f"{out} is in use by {output_lock.describe(holder)}, which writes one of its shards; "
                        f"wait for it, or delete {lock} if that run has ended")
            yield
    else:
        with output_lock.held(out, shard_lock_name(shard_index)):
            if (holder := output_lock.live_holder(out / output_lock.LOCK_NAME)) is not None:
                raise output_lock.OutputLockError(
                    f"{out} is in use by {output_lock.describe(holder)}, which writes the whole set; wait for "
                    f"it, or delete {out / output_lock.LOCK_NAME} if that run has ended")
            yield


class ShardWriter:
    """Writes one shard under a temporary name; `commit` renames it and then writes its part-index."""

    def __init__(self, directory: str | os.PathLike, index: int, count: int, fields: dict[str, dict]):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.directory = Path(directory)
        self.index, self.count, self.fields = index, count, fields
        self.name = shard_name(index, count)
        # ArrayRecordWriter opens (and truncates) whatever its path names, following a symlink: the temporary is
        # first created exclusively under a random name (jaxcodec.atomic), so the path it opens is a new regular
        # file of this process, not a file or link planted at a predictable name.
        self.tmp_path = atomic.create_temporary(self.directory / self.name)
        self._writer = ArrayRecordWriter(str(self.tmp_path), WRITER_OPTIONS)
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.num_samples: list[int] = []
        self.audio_seconds = 0.0

    def write(self, record: dict[str, Any]) -> None:
        for key, spec in self.fields.items():
            if not matches_spec(record.get(key), spec):
                value = record.get(key)
                got = f"{value.dtype}{list(value.shape)}" if isinstance(value, np.ndarray) else type(value).__name__
                raise ShardError(f"record {record.get('id')!r}: field {key!r} is {got}, expected "
                                 f"{spec['dtype']}{spec['shape']}")
        with self._failing_write_named():
            self._writer.write(encode_record(record))
        self.ids.append(str(record["id"]))
        self.splits.append(str(record.get("split", "train")))
        self.num_samples.append(int(record["num_samples"]))
        self.audio_seconds += int(record["num_samples"]) / int(record["sample_rate"])

    def commit(self, provenance: dict, rejects: Sequence[dict], source: dict, code_version: str = "") -> dict:
        with self._failing_write_named():
            self._writer.close()
            with open(self.tmp_path, "rb") as f:
                os.fsync(f.fileno())
        part = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "file": self.name,
            "index": self.index,
            "count": self.count,
            "records": len(self.ids),
            "bytes": self.tmp_path.stat().st_size,
            "sha256": sha256_file(self.tmp_path),
            "audio_seconds": round(self.audio_seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "code_version": code_version,  # informational: a resumed run may finish with newer code
            "fields": self.fields,
            "provenance": provenance,
            "source": source,
            "ids": self.ids,
            "splits": self.splits,
            "num_samples": self.num_samples,
            "rejects": list(rejects),
        }
        os.replace(self.tmp_path, self.directory / self.name)
        atomic.write_json(self.directory / part_name(self.index, self.count), part)
        return part

    def abort(self) -> None:
        if self._writer.is_open():
            with contextlib.suppress(RuntimeError, OSError):  # the write that failed may fail again on close
                self._writer.close()
        self.tmp_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _failing_write_named(self):
        """array_record reports a full disk or a file-size limit as a RuntimeError naming only its temporary: say
        which shard could not be written and why, in one line."""
        try:
            yield
        except (RuntimeError, OSError) as err:
            raise ShardError(f"writing {self.directory / self.name} failed: {error_line(err)}") from err


# --- index -----------------------------------------------------------------------------------------------------

def shard_count(directory: Path) -> int | None:
    counts = {int(m.group(2)) for p in directory.iterdir() if (m := _SHARD_RE.match(p.name))}
    counts |= {int(p.stem.split("-of-")[1]) for p in directory.glob("shard-*-of-*.json")}
    if len(counts) > 1:
        raise ShardError(f"{directory} mixes shard sets of sizes {sorted(counts)}; use a fresh directory")
    return counts.pop() if counts else None


def merge_index(directory: str | os.PathLike) -> dict:
    """Combines every part-index into index.json and rejects.jsonl; raises ShardError naming the missing shards."""
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
                                          "num_samples")} for part in parts]
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
    return index


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


# --- reading ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Requirement:
    """What a consumer (training, eval) needs of a shard set; `ShardReader.require` checks it."""

    sample_rate: int | None = None
    hop_length: int | None = None
    hubert_layer: str | None = None
    hubert_dim: int | None = None
    ecapa_dim: int | None = None
    ecapa_frames: bool | None = None



TEACHERS_FILE = "teachers.json"  # a training workdir's copy of its shard set's provenance (for later reports)


# A phone posteriorgram (teachers/phones.py) is a per-frame distribution: it is matched frame by frame (cosine
# over its 40 dimensions). SpeechTokenizer's default, the cosine over time per dimension, is trivially near 1 for
# the phones a crop does not contain (their rows are constant), which is most of them: measured in the ablation
# (bench/learning.md), the level-1 phone probe did not move under it.
POSTERIORGRAM_LAYER = "phones"


def config_overrides(provenance: dict) -> list[str]:
    """The `--set` overrides a shard set implies: the teachers' dimensions and layer, and for a phone posteriorgram
    the per-frame semantic cosine."""
    content, acoustic = provenance["hubert"], provenance["ecapa"]
    overrides = [f"model.semantic_dim={content['dim']}", f"model.acoustic_dim={acoustic['dim']}",
                 f"data.hubert_layer={content['layer']}"]
    if content.get("layer") == POSTERIORGRAM_LAYER:
        overrides.append("loss.semantic_axis=time")
    return overrides


def describe_teachers(provenance: dict) -> dict[str, str]:
    """One phrase per teacher from a shard set's provenance, for reports: a stand-in says what it is."""
    content, acoustic = provenance.get("hubert") or {}, provenance.get("ecapa") or {}
    if content.get("teacher"):  # an offline content teacher, e.g. "phones from PocketSphinx, not HuBERT"
        content_text = f"{content.get('model')} ({content['teacher']})"
    else:
        content_text = f"HuBERT {content.get('model')}, layer {content.get('layer')}" + (
            f" ({content['random_init']})" if content.get("random_init") else "")
    return {"content": content_text, "acoustic": f"{acoustic.get('model')} ({acoustic.get('dim')}-d)"}

ERROR_CHARS = 200  # a library error quoted in a one-line message is cut here (orbax's run to hundreds of lines)


def error_line(err: BaseException) -> str:
    """A library error for a one-line message: its first line (its type's name if it has none), shortened."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "…"


class ShardReader:
    """Random access to the records of a shard set by global index (a grain RandomAccessDataSource)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.index = load_index(self.directory)
        self.files = [self.directory / shard["file"] for shard in self.index["shards"]]
        missing = [p.name for p in self.files if not p.is_file()]
        if missing:
            raise ShardError(f"{self.directory}: shard file {missing[0]} is missing ({len(missing)} in all)")
        for path, shard in zip(self.files, self.index["shards"], strict=True):  # cheap: no file is read
            if path.stat().st_size != shard["bytes"]:
                raise self._damaged(path, f"{path.stat().st_size} bytes, index.json says {shard['bytes']}")
            listed = {len(shard[key]) for key in ("ids", "splits", "num_samples")}
            if listed != {shard["records"]}:
                raise ShardError(f"{self.directory / INDEX_NAME}: {path.name} claims {shard['records']} records but "
                                 f"lists {sorted(listed)} ids/splits/lengths (damaged or edited index)")
        counts = np.array([shard["records"] for shard in self.index["shards"]], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self.ids = [i for shard in self.index["shards"] for i in shard["ids"]]
        self.splits = np.array([s for shard in self.index["shards"] for s in shard["splits"]])
        self.num_samples = np.array([n for shard in self.index["shards"] for n in shard["num_samples"]],
                                    dtype=np.int64)
        self._position = {utt: i for i, utt in enumerate(self.ids)}
        self._readers: dict[int, Any] = {}
        self._open_lock = threading.Lock()

    @property
    def provenance(self) -> dict:
        return self.index["provenance"]

    @property
    def fields(self) -> dict:
        return self.index["fields"]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, record: int) -> tuple[int, int]:
        if not 0 <= record < len(self):
            raise IndexError(f"record {record} out of range [0, {len(self)})")
        shard = int(np.searchsorted(self._starts, record, side="right")) - 1
        return shard, record - int(self._starts[shard])

    def _reader(self, shard: int):
        with self._open_lock:  # the input pipeline reads from several threads: open each file once
            if shard not in self._readers:
                from array_record.python.array_record_module import ArrayRecordReader

                path, claimed = self.files[shard], self.index["shards"][shard]["records"]
                try:
                    reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
                    held = reader.num_records()
                except (RuntimeError, ValueError, OSError) as err:
                    raise self._damaged(path, f"cannot be opened ({error_line(err)})") from None
                if held != claimed:
                    reader.close()
                    raise self._damaged(path, f"holds {held} records, index.json says {claimed}")
                self._readers[shard] = reader
            return self._readers[shard]

    def check_files(self) -> None:
        """Opens every shard once (cheap: no record is read): a file that is not an ArrayRecord file, or holds
        another number of records than index.json says, is a one-line ShardError naming it, before a run starts."""
        for shard in range(len(self.files)):
            self._reader(shard)

    def __getitem__(self, record: int) -> dict[str, Any]:
        shard, local = self.locate(int(record))
        reader = self._reader(shard)
        try:  # array_record reports a damaged chunk as a RuntimeError that names no file
            return decode_record(reader.read([local])[0])
        except (RuntimeError, ValueError, TypeError, KeyError, msgpack.ExtraData, msgpack.FormatError) as err:
            raise self._damaged(self.files[shard], f"record {local} cannot be read ({error_line(err)})") from None

    def _damaged(self, path: Path, problem: str) -> ShardError:
        return ShardError(f"{path}: {problem}; the shard set is damaged: `jaxcodec shards verify {self.directory}` "
                          f"lists every bad shard, to precompute again")

    def __getitems__(self, records: Sequence[int]) -> list[dict[str, Any]]:
        return [self[r] for r in records]

    def position(self, utterance_id: str) -> int:
        if utterance_id not in self._position:
            raise KeyError(f"utterance {utterance_id!r} is not in {self.directory}")
        return self._position[utterance_id]

    def indices(self, split: str | None = None) -> np.ndarray:
        """Global record indices of one split (all records when None)."""
        if split is None:
            return np.arange(len(self))
        return np.flatnonzero(self.splits == split)

    def require(self, need: Requirement) -> None:
        """Raises a one-line ShardError when the shards were made for something else than `need` says."""
        prov = self.provenance
        hubert, ecapa = prov.get("hubert") or {}, prov.get("ecapa") or {}
        checks = [
            ("sample rate", need.sample_rate, prov.get("sample_rate")),
            ("hop length", need.hop_length, prov.get("hop_length")),
            ("HuBERT layer", need.hubert_layer, hubert.get("layer")),
            ("HuBERT dimension", need.hubert_dim, hubert.get("dim")),
            ("ECAPA dimension", need.ecapa_dim, ecapa.get("dim")),
            ("frame-level ECAPA features", need.ecapa_frames, "ecapa_frames" in self.fields),
        ]
        for what, wanted, found in checks:
            if wanted is not None and wanted != found:
                try:  # what the config would need to match these shards
                    fix = " or train with " + " ".join(f"--set {o}" for o in config_overrides(prov))
                except (KeyError, TypeError):
                    fix = ""
                raise ShardError(f"{self.directory}: {what} is {found!r} in the shards but the config needs "
                                 f"{wanted!r}; precompute shards with matching settings{fix}")

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __getstate__(self):  # grain copies data sources into worker processes: reopen files there
        state = self.__dict__.copy()
        state["_readers"] = {}
        del state["_open_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open_lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- verification ----------------------------------------------------------------------------------------------

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
        elif part["sha256"] != shard["sha256"] or part["provenance"] != prov or part["fields"] != fields:
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
