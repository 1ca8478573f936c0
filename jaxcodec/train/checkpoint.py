"""Training checkpoints: a thin, typed wrapper over `orbax.checkpoint.CheckpointManager`.

One checkpoint step is a directory with the items
  state    the training pytree (params, optimizer states, step, RNG key data, ...), as sharded arrays (PyTree handler)
  data     the grain iterator position, one JSON file per process (grain's own orbax handler)
  config   the run config (JSON), so a resume can check what it is resuming
  metrics  the validation metrics (JSON), written by the manager itself because `best_fn` is set; used for retention

Atomicity comes from orbax: a step is written under `<step>.orbax-checkpoint-tmp*` and renamed to `<step>` only when
every item is durable, so a run killed mid-save leaves the previous checkpoint intact and the unfinished one invisible
(a Checkpointer opening the directory removes leftover temporary directories in the background, at the latest
before its first save).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from jaxcodec.data.shards import error_line
from jaxcodec.workdir import (
    BEST_METRIC,
    CONFIG_ITEM,
    DAMAGED_SUFFIX,
    DATA_ITEM,
    DIVERGED_SUFFIX,
    STATE_ITEM,
    CheckpointError,
    best_step,
    check_shapes,
    resolve_step,
    score,
)

PyTree = Any
log = logging.getLogger(__name__)

# The format's names are jaxcodec.workdir's, which reads checkpoints without the training code.
_STATE, _DATA, _CONFIG = STATE_ITEM, DATA_ITEM, CONFIG_ITEM


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {error_line(err)}"


# Why a write to a checkpoint folder fails on a working system: full disk, file-size limit, quota, read-only, denied.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES)


class Checkpointer:
    """Saves and restores training state, data-iterator position, config and metrics under `directory`.

    Retention: the last `keep` steps, plus (if `keep_best`) the step with the lowest `metrics[best_metric]`.
    Call `save` from every process (orbax coordinates multi-host writes); saves are async unless `async_save=False`.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        keep_best: bool = True,
        best_metric: str = BEST_METRIC,
        async_save: bool = True,
    ):
        self.best_metric = best_metric
        # orbax's max_to_keep + best_fn would keep the N *best* steps, not "last N plus the best one", so the policy
        # is spelled out: a step survives if any of the policies preserves it.
        policies = [LatestN(n=keep)]
        if keep_best:
            # BestN sorts ascending and keeps the tail, so reverse=True puts the lowest score last.
            policies.append(BestN(get_metric_fn=self._score, reverse=True, n=1, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            best_fn=self._score,  # without best_fn the manager would not write the metrics item at all
            best_mode="min",
            preservation_policy=AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # drop the debris of a killed save (orbax awaits it in the first save)
        )
        handlers = {
            _STATE: ocp.StandardCheckpointHandler(),
            _DATA: grain.checkpoint.CheckpointHandler(),
            _CONFIG: ocp.JsonCheckpointHandler(),
        }
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=handlers)
        self._pending: int | None = None  # step of the async save that may still be in flight
        self._metadata: dict[int, Any] = {}  # per step: reading it costs ~0.5 s (base config), and a resume needs it 3×

    def _score(self, metrics: dict[str, float]) -> float:
        return score(metrics, self.best_metric)

    def save(
        self,
        step: int,
        state: PyTree,
        *,
        data_iterator: Any = None,
        config: dict | None = None,
        metrics: dict[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Starts saving `state` at `step`; returns False if the manager skipped it (e.g. step already saved).

        The iterator position is read before this returns (grain's handler is synchronous), so the caller may keep
        advancing the iterator, and the arrays are copied off the devices, so the caller may donate them.
        """
        items = {_STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[_DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items[_CONFIG] = ocp.args.JsonSave(config)
        # JSON cannot hold numpy/jax scalars; plain floats also keep the metrics file readable. An empty dict (scores
        # +inf, so never "best") instead of None keeps orbax from warning on every save without metrics.
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        self._metadata.pop(step, None)
        with self._failed_save_named(self._pending):  # orbax reports the previous async save's failure here
            saved = self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)
        if saved:
            self._pending = step
        return saved

    def restore(
        self, abstract_state: PyTree, *, step: int | None = None, data_iterator: Any = None
    ) -> tuple[PyTree, int]:
        """Restores the state saved at `step` (default: the latest) shaped and sharded like `abstract_state`.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `.sharding` set; the mesh may differ from the one
        the checkpoint was saved from. If `data_iterator` is given and the step has an iterator position, the
        iterator is moved there. Returns (state, step).
        """
        step = self._resolve(step)
        self._check_shapes(step, abstract_state)
        items = {_STATE: ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            if self._has_item(step, _DATA):
                items[_DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
            else:
                log.warning("checkpoint step %d has no data-iterator state; the iterator starts where it is", step)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored[_STATE], step

    def restore_newest(
        self, abstract_state: PyTree, *, data_iterator: Any = None, check: Callable[[int, dict | None], None] = None
    ) -> tuple[PyTree, int, list[tuple[int, str]]]:
        """Restores the newest step that restores completely, as `restore` does; returns (state, step, skipped):
        the newer steps passed over, each with the reason, newest first. A damaged step (a truncated or missing
        file, lost metadata: any error of reading it) is passed over; `check(step, saved config)` runs before a
        step is read and its errors propagate (a config that refuses the run refuses every step). The skipped
        steps are moved to `damaged_directory`, so saving those steps again starts afresh (orbax skips a step
        that exists). CheckpointError when no step restores."""
        skipped: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            try:
                saved = self.saved_config(step)
            except Exception as err:  # noqa: BLE001 -- orbax and tensorstore raise many types for damage
                skipped.append((step, _reason(err)))
                continue
            if check is not None:
                check(step, saved)
            try:
                state, step = self.restore(abstract_state, step=step, data_iterator=data_iterator)
            except Exception as err:  # noqa: BLE001
                skipped.append((step, _reason(err)))
                continue
            self._set_aside([s for s, _ in skipped])
            return state, step, skipped
        tried = "; ".join(f"step {s}: {why}" for s, why in skipped)
        raise CheckpointError(f"no checkpoint in {self.directory} restores ({tried}); use a new --workdir, "
                              f"or move the damaged checkpoints away")

    def set_aside_from(self, first: int) -> list[int]:
        """Moves the saved steps ≥ `first` to `diverged_directory` (after any save in flight is durable), so a
        resume starts from the newest step before a divergence; returns those steps."""
        self.wait()
        steps = [step for step in self.all_steps() if step >= first]
        self._set_aside(steps, self.diverged_directory)
        return steps

    def _set_aside(self, steps: list[int], folder: str | None = None) -> None:
        if not steps:
            return
        folder = self.damaged_directory if folder is None else folder
        if jax.process_index() == 0:
            os.makedirs(folder, exist_ok=True)
            for step in steps:
                target = os.path.join(folder, str(step))
                if os.path.exists(target):  # set aside before: keep both
                    target += f".{time.time_ns()}"
                os.replace(os.path.join(self.directory, str(step)), target)
                self._metadata.pop(step, None)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxcodec checkpoints set aside")
        self._manager.reload()

    @property
    def directory(self) -> str:
        return os.fspath(self._manager.directory)

    @property
    def damaged_directory(self) -> str:
        """Where `restore_newest` moves the steps that did not restore, one folder per step."""
        return self.directory + DAMAGED_SUFFIX

    @property
    def diverged_directory(self) -> str:
        """Where `set_aside_from` moves the steps saved while a run diverged, one folder per step."""
        return self.directory + DIVERGED_SUFFIX

    def all_steps(self) -> list[int]:
        """Finalized steps, oldest first; a save still in flight in this process is not listed."""
        steps = sorted(self._manager.all_steps())
        if self._pending is not None and self._manager.is_saving_in_progress():
            steps = [s for s in steps if s != self._pending]
        return steps

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The kept step with the lowest `best_metric`, or None if no kept step has one."""
        return best_step(((s, self._manager.metrics(s)) for s in self.all_steps()), self.best_metric)

    def saved_config(self, step: int | None = None) -> dict | None:
        """The config saved with `step` (default: the latest), or None if it was saved without one."""
        step = self._resolve(step)
        if not self._has_item(step, _CONFIG):
            return None
        return self._manager.restore(step, args=ocp.args.Composite(**{_CONFIG: ocp.args.JsonRestore()}))[_CONFIG]

    def wait(self) -> None:
        """Blocks until every started save is durable (and old steps are deleted); re-raises a failed save."""
        with self._failed_save_named(self._pending):
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        self._pending = None

    @contextlib.contextmanager
    def _failed_save_named(self, step: int | None):
        """A save that fails on a full disk or a file-size limit raises from tensorstore deep in orbax (a ValueError
        of several lines): one line naming the step and folder instead. The step being written stays a temporary
        directory, never a finalized step; the previous steps are intact."""
        try:
            yield
        except (OSError, ValueError, RuntimeError) as err:
            what = f"step {step}" if step is not None else "a checkpoint"
            # tensorstore puts the system's reason at the end of a long message: name it first when it is there.
            system = next((os.strerror(code) for code in _STORAGE_ERRNOS if os.strerror(code) in str(err)), None)
            reason = f"{system} ({error_line(err)})" if system else error_line(err)
            raise CheckpointError(f"saving {what} in {self._manager.directory} failed: {reason}") from err

    def close(self) -> None:
        self._manager.close()
        self._pending = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _resolve(self, step: int | None) -> int:
        return resolve_step(self.all_steps(), step, self._manager.directory)

    def _has_item(self, step: int, name: str) -> bool:
        # The step's metadata lists only the items that were saved in it.
        return name in self._item_metadata(step)

    def _item_metadata(self, step: int):
        if step not in self._metadata:
            self._metadata[step] = self._manager.item_metadata(step)
        return self._metadata[step]

    def _check_shapes(self, step: int, abstract_state: PyTree) -> None:
        """Fails with the first key whose stored shape differs from the requested one (orbax's error names none)."""
        check_shapes(step, self._item_metadata(step)[_STATE], abstract_state)
