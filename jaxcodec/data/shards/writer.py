"""Writing one shard: its temporary file, records checked against the set's fields, the commit (rename, then the
part-index) or the abort; and the removal of what an interrupted write left behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcodec import atomic
from jaxcodec.data.shards.errors import ShardError, error_line
from jaxcodec.data.shards.format import (
    FORMAT,
    FORMAT_VERSION,
    WRITER_OPTIONS,
    encode_record,
    matches_spec,
    part_name,
    sha256_file,
    shard_name,
)


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
        self.speakers: list[str] = []  # per record: lets a reader sample by speaker without decoding records
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
        self.speakers.append(str(record.get("speaker") or ""))
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
            "speakers": self.speakers,
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


