"""The loop that writes a shard set, shared by `jaxcodec precompute` (the teachers' features) and `jaxcodec
tokenize` (a codec's tokens): select the manifest's entries, deal them to shards, skip the shards already
committed, write each of this process's other shards (stale temporaries removed first; the shard aborted on any
error), and merge the index once every shard of the set is committed.

A caller does what only it knows: how many shards by default, what a shard's records are (`fill`), its model's
provenance and fields, and how to report. The usual sequence:

    entries = shards.select(manifest_lib.read(path), splits, path, "tokenize")
    plan = shards.plan(out, entries, num_shards, shard_index, default_count)
    log(... plan.count, len(plan.mine), plan.done ...)
    if plan.todo:
        (load the model)
        shards.check_existing(plan.out, plan.count, provenance, source, fields)
        shards.write_planned(plan, provenance, source, fields, fill, log)
    return shards.merge_when_complete(out, log)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from jaxcodec.data.shards.errors import ShardError
from jaxcodec.data.shards.format import REJECTS_NAME
from jaxcodec.data.shards.index import merge_index, read_part, shard_count
from jaxcodec.data.shards.writer import ShardWriter, remove_stale_temporaries

# fill(writer, entries) writes the records of one shard's entries with writer.write and returns its rejects
# ({"id", "path", "reason"} rows).
Fill = Callable[[ShardWriter, list[dict]], list[dict]]


def select(entries: list[dict], splits: Sequence[str], manifest: str | Path, doing: str) -> list[dict]:
    """The entries of `splits` (all when empty); a ShardError "MANIFEST: no utterances to DOING" when none is left."""
    if splits:
        entries = [e for e in entries if e.get("split") in splits]
    if not entries:
        raise ShardError(f"{manifest}: no utterances to {doing}")
    return entries


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


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """One process's share of a shard set: the set's size, its shards, those of them not committed yet, and every
    shard's entries (`assign`)."""

    out: Path
    count: int
    mine: list[int]
    todo: list[int]
    assigned: list[list[dict]]

    @property
    def done(self) -> int:
        """This process's shards that are already committed (skipped)."""
        return len(self.mine) - len(self.todo)


def plan(out: str | Path, entries: list[dict], num_shards: int | None, shard_index: int | None,
         default_count: Callable[[list[dict]], int]) -> ShardPlan:
    """The plan of a run over `entries` with `--num-shards` (default_count(entries) when unset) and `--shard-index`
    (all shards when unset); creates `out`. Refused (ShardError, before any model is loaded) when the shard index
    is given without a shard count or outside it, or `out` holds a set of another size."""
    count = num_shards or default_count(entries)
    if shard_index is not None and num_shards is None:
        raise ShardError("--shard-index needs --num-shards, so that every process splits the manifest alike")
    if shard_index is not None and not 0 <= shard_index < count:
        raise ShardError(f"--shard-index {shard_index} is outside 0..{count - 1}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    existing = shard_count(out)
    if existing is not None and existing != count:
        raise ShardError(f"{out} holds a set of {existing} shards; this run asks for {count} "
                         f"(use --num-shards {existing}, or a fresh --out)")
    mine = [shard_index] if shard_index is not None else list(range(count))
    todo = [i for i in mine if read_part(out, i, count) is None]
    return ShardPlan(out, count, mine, todo, assign(entries, count))


def write_shard(out: Path, index: int, count: int, fields: dict, provenance: dict, source: dict,
                fill: Callable[[ShardWriter], list[dict]], code_version: str = "") -> dict:
    """Writes and commits one shard: removes what an interrupted write left, lets `fill` write the records (it
    returns the rejects), commits; any error (or interrupt) aborts the shard, whose temporary goes, and is raised.
    Returns the shard's part-index."""
    remove_stale_temporaries(out, index, count)
    writer = ShardWriter(out, index, count, fields)
    try:
        rejects = fill(writer)
        return writer.commit(provenance, rejects, source, code_version=code_version)
    except BaseException:
        writer.abort()
        raise


def write_planned(plan: ShardPlan, provenance: dict, source: dict, fields: dict, fill: Fill,
                  report: Callable[[str], None], code_version: str = "") -> None:
    """Writes every shard of `plan.todo` in turn (`write_shard`, with `fill(writer, that shard's entries)`) and
    reports "FILE: N utterances, R rejected" for each. Call `check_existing` first, once the model's provenance
    and fields are known."""
    for i in plan.todo:
        part = write_shard(plan.out, i, plan.count, fields, provenance, source,
                           lambda writer, entries=plan.assigned[i]: fill(writer, entries), code_version)
        report(f"{part['file']}: {part['records']} utterances, {len(part['rejects'])} rejected")


def merge_when_complete(out: str | Path, log: Callable[[str], None],
                        finalize: Callable[[dict, Path], dict] | None = None) -> dict | None:
    """Merges the index when every shard of the set is committed and logs its totals; otherwise logs why not (the
    shards other processes have yet to write) and returns None. `finalize` as merge_index's."""
    try:
        index = merge_index(out, finalize)
    except ShardError as err:
        log(f"index not merged yet: {err}")
        return None
    log(f"index.json: {index['num_records']} utterances ({index['audio_seconds'] / 3600:.2f} h), "
        f"{index['num_rejects']} rejected (see {REJECTS_NAME})")
    return index
