"""Atomic file writes: write under a temporary name in the same directory, flush to disk, then rename, so a reader
(or a rerun after a crash) sees the old file or the new one, never half of one. Temporary names start with '.' and
the final name (`.manifest.jsonl.tmp-3f9c…`), so scans skip them and a listing shows what they would become.

A temporary name ends in random characters and is created exclusively (O_CREAT|O_EXCL): a file or a symlink
planted at a predictable name (once `.NAME.tmp-PID`) would have redirected the write to another file; with O_EXCL
an existing name, even a dangling symlink, fails the creation and the next random name is tried. Writers then
open the temporary by its path (soundfile, array_record and matplotlib take a path): swapping the file in
the moment between its creation and that open would take write access to the directory and guessing 64 random
bits' name as it appears, and such a user could replace the final file anyway."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TEMPORARY_SUFFIX_BYTES = 8  # 64 random bits: a name nobody can plant in advance
# Names tried before giving up: two random names collide about never, so repeated collisions mean names are being
# planted (or the suffix source is broken), not bad luck.
TEMPORARY_ATTEMPTS = 16
# Permissions as `open(path, "w")` gives (the umask applies), so an atomic write leaves the mode a plain one would.
TEMPORARY_MODE = 0o666


def tmp_prefix(name: str) -> str:
    return f".{name}.tmp-"


def temporary_suffix() -> str:
    return secrets.token_hex(TEMPORARY_SUFFIX_BYTES)


def open_temporary(path: str | os.PathLike) -> tuple[int, Path]:
    """Creates a new empty file `.NAME.tmp-RANDOM` beside `path`, exclusively; returns its open (read-write)
    descriptor, which the caller closes, and its path."""
    path = Path(path)
    for _ in range(TEMPORARY_ATTEMPTS):
        tmp = path.with_name(tmp_prefix(path.name) + temporary_suffix())
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, TEMPORARY_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: {TEMPORARY_ATTEMPTS} temporary names for {path.name} were all taken")


def create_temporary(path: str | os.PathLike) -> Path:
    """`open_temporary` for writers that open the file by its path."""
    fd, tmp = open_temporary(path)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; on success it is synced and renamed to `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temporary(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, payload: Any) -> None:
    write_text(path, json.dumps(payload, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
