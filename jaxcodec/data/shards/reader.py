"""Reading a shard set: random access to its records by global index, and the check that it was made for what
the consumer needs."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from jaxcodec.data.shards.errors import ShardError, error_line
from jaxcodec.data.shards.format import CONTENT, INDEX_NAME, SPEAKER, SPEAKER_FRAMES, decode_record
from jaxcodec.data.shards.index import load_index
from jaxcodec.data.shards.provenance import config_overrides


@dataclasses.dataclass(frozen=True)
class Requirement:
    """What a consumer (training, eval) needs of a shard set; `ShardReader.require` checks it."""

    sample_rate: int | None = None
    hop_length: int | None = None
    content_layer: str | None = None
    content_dim: int | None = None
    speaker_dim: int | None = None
    speaker_frames: bool | None = None



class ShardReader:
    """Random access to the records of a shard set by global index (a grain RandomAccessDataSource)."""

    def __init__(self, directory: str | os.PathLike, index: dict | None = None):
        """`index`: the set's merged index when index.json is not written yet (a merge reads its shards)."""
        self.directory = Path(directory)
        self.index = load_index(self.directory) if index is None else index
        self.files = [self.directory / shard["file"] for shard in self.index["shards"]]
        missing = [p.name for p in self.files if not p.is_file()]
        if missing:
            raise ShardError(f"{self.directory}: shard file {missing[0]} is missing ({len(missing)} in all)")
        for path, shard in zip(self.files, self.index["shards"], strict=True):  # cheap: no file is read
            if path.stat().st_size != shard["bytes"]:
                raise self._damaged(path, f"{path.stat().st_size} bytes, index.json says {shard['bytes']}")
            listed = {len(shard[key]) for key in ("ids", "splits", "num_samples", "speakers") if key in shard}
            if listed != {shard["records"]}:
                raise ShardError(f"{self.directory / INDEX_NAME}: {path.name} claims {shard['records']} records but "
                                 f"lists {sorted(listed)} ids/splits/lengths (damaged or edited index)")
        counts = np.array([shard["records"] for shard in self.index["shards"]], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self.ids = [i for shard in self.index["shards"] for i in shard["ids"]]
        self.splits = np.array([s for shard in self.index["shards"] for s in shard["splits"]])
        self.num_samples = np.array([n for shard in self.index["shards"] for n in shard["num_samples"]],
                                    dtype=np.int64)
        # Per-record speakers, when the index lists them (sets written before they were listed do not).
        self.speakers = ([s for shard in self.index["shards"] for s in shard["speakers"]]
                         if all("speakers" in shard for shard in self.index["shards"]) else None)
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
        content, speaker = prov.get(CONTENT) or {}, prov.get(SPEAKER) or {}
        checks = [
            ("sample rate", need.sample_rate, prov.get("sample_rate")),
            ("hop length", need.hop_length, prov.get("hop_length")),
            ("content teacher layer", need.content_layer, content.get("layer")),
            ("content teacher dimension", need.content_dim, content.get("dim")),
            ("speaker teacher dimension", need.speaker_dim, speaker.get("dim")),
            ("frame-level speaker features", need.speaker_frames, SPEAKER_FRAMES in self.fields),
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


