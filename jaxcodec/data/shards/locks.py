"""The locks of a run writing a shard set: the whole set's, or one shard's (a job array's process)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from jaxcodec import output_lock

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


