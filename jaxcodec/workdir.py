"""A training workdir as the library reads it: the name of every file in it, one tolerant reader of its
metrics.jsonl (the loop, the demo report and the scripts read it through `read_metrics`), the checkpoint format's
names, and the codec restored from a checkpoint step (or from a file written by `jaxcodec export`) without the
rest of the training state.

A workdir W holds `checkpoints/`, one orbax step folder per saved step with the items
  state    the training pytree; the codec is its subtree `codec/params/...` and `codec/rest/...`
  data     the input pipeline's position (grain's own format; only training reads it)
  config   the run config (JSON)
  metrics  the validation metrics (JSON), which pick the "best" step
`jaxcodec.train.checkpoint` writes that format with these names; this module only reads it, and imports neither
grain nor `jaxcodec.train`, so `jaxcodec.load` and `jaxcodec eval` load a codec without the training code. The
codec is restored by its path in the saved tree (an orbax partial restore), whatever Python type holds the state
in training, and only its arrays are read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHECKPOINTS_FOLDER = "checkpoints"  # W/checkpoints/<step>/
# The other files of a workdir, all named here (no other module spells one):
CONFIG_FILE = "config.json"  # the run config as resolved at the start (JSON)
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step, validation pass, warning or stop
DATA_FILE = "data.json"  # the shard set trained on: its path, its shards' checksums, its calibration's digest
TEACHERS_FILE = "teachers.json"  # the shard set's provenance (which teachers guided the run), for later reports
IMPORT_FILE = "import.json"  # `jaxcodec import`: where the weights came from
TENSORBOARD_FOLDER = "tensorboard"  # TensorBoard event files
SAMPLES_FOLDER = "samples"  # validation reconstructions: samples/<step, 8 digits>/*.wav
STATE_ITEM, DATA_ITEM, CONFIG_ITEM = "state", "data", "config"  # the items of one step folder
CODEC_KEY = "codec"  # the state's subtree that is the codec: {"params": nnx.State, "rest": nnx.State}
BEST_METRIC = "valid_mel"  # the validation score (lower is better) that makes a step the "best"
BEST_STEP = "best"  # the step argument that asks for the best step instead of a number or the latest
DAMAGED_SUFFIX = "-damaged"  # checkpoints that did not restore go to `<checkpoints folder>-damaged/<step>`
DIVERGED_SUFFIX = "-diverged"  # checkpoints saved after a divergence began go to `<checkpoints folder>-diverged/`


class CheckpointError(RuntimeError):
    """A checkpoint cannot be restored as asked (missing, or saved with other shapes)."""


class MetricsFileError(ValueError):
    """A line of metrics.jsonl other than the last is not a JSON object: the file was damaged or edited."""


def metrics_lines(path: str | os.PathLike, log=None) -> list[tuple[str, dict]]:
    """(line, parsed row) of each line of a metrics.jsonl (none when it does not exist). A last line cut short (a
    run killed mid-write) is dropped, with a warning through `log` when given; an invalid line anywhere else raises
    MetricsFileError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if line.strip()]
    rows = []
    for number, line in lines:
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as err:
            if number == lines[-1][0]:
                if log is not None:
                    log(f"warning: {path}: line {number} is incomplete (a run stopped while writing it); dropped")
                continue
            raise MetricsFileError(f"{path}: line {number} is not a JSON object ({err}); fix or delete that "
                                   f"line") from None
        rows.append((line, row))
    return rows


def read_metrics(workdir: str | os.PathLike, log=None) -> list[dict]:
    """The rows of a training workdir's metrics.jsonl, in order (see `metrics_lines`)."""
    return [row for _, row in metrics_lines(Path(workdir) / METRICS_FILE, log)]


def checkpoints_folder(workdir: str | os.PathLike) -> Path:
    """The checkpoints folder of a training workdir, or `workdir` itself when it is that folder."""
    root = Path(workdir)
    return root / CHECKPOINTS_FOLDER if (root / CHECKPOINTS_FOLDER).is_dir() else root


def workdir_of(path: str | os.PathLike) -> Path:
    """The training workdir of `path`, a workdir or its checkpoints folder."""
    path = Path(path)
    return path.parent if path.name == CHECKPOINTS_FOLDER else path


def resolve_step(steps: list[int], step: int | None, directory: str | os.PathLike) -> int:
    """`step` (None = the newest of `steps`, oldest first) if it is one of the finalized `steps`."""
    if step is None and not steps:
        raise CheckpointError(f"no finalized checkpoint in {directory}")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointError(f"no finalized checkpoint step {step} in {directory} (have {steps})")
    return step


def score(metrics: dict[str, float], metric: str) -> float:
    """The step's `metric`; a step saved without it can never be the best."""
    return float(metrics.get(metric, math.inf))


def best_step(steps_metrics: Iterable[tuple[int, dict | None]], metric: str) -> int | None:
    """The step with the lowest finite `metric` among (step, saved metrics) pairs, or None if none has one."""
    scored = [(score(metrics, metric), step) for step, metrics in steps_metrics if metrics]
    scored = [(value, step) for value, step in scored if math.isfinite(value)]
    return min(scored)[1] if scored else None


def check_shapes(step: int, state_metadata: Any, abstract_state: Any, *, under: str | None = None) -> None:
    """Fails with the first key of `abstract_state` whose stored shape differs (orbax's error names none).

    `state_metadata` is the state item's orbax metadata (None when its _METADATA file is missing or unreadable).
    With `under` (a top-level key of the saved state), only the stored entries below it are compared: a partial
    restore of that subtree."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    if state_metadata is None:  # orbax lists the item but cannot read its _METADATA file
        raise CheckpointError(f"checkpoint step {step}: the state's metadata ({STATE_ITEM}/_METADATA) is missing or "
                              f"unreadable")
    stored = {m.name: tuple(m.shape) for m in jax.tree.leaves(state_metadata.tree)}
    if under is not None:
        stored = {name: shape for name, shape in stored.items() if name.startswith(f"{under}.")}
    wanted = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
        # Orbax names a stored array by its key path joined with '.', the same way as here.
        name = ".".join(ocp.tree.str_keypath(path))
        wanted.add(name)
        want = tuple(np.shape(leaf)) if not hasattr(leaf, "shape") else tuple(leaf.shape)
        if name not in stored:
            raise CheckpointError(f"checkpoint step {step} has no entry '{name}' (abstract_state wants {want})")
        if stored[name] != want:
            raise CheckpointError(
                f"checkpoint step {step}: '{name}' was saved with shape {stored[name]} but abstract_state "
                f"wants {want} (did the config change the model?)"
            )
    if extra := sorted(stored.keys() - wanted):
        raise CheckpointError(
            f"checkpoint step {step} has '{extra[0]}' (and {len(extra) - 1} more) not in abstract_state"
        )


class SavedCheckpoints:
    """The finalized steps of a checkpoints folder, read only: steps, saved configs and metrics, and the codec
    of a step. Opening it changes nothing in the folder (a training run may be saving into it)."""

    def __init__(self, directory: str | os.PathLike):
        import orbax.checkpoint as ocp

        options = ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False,
                                               enable_async_checkpointing=False)
        # The state item is read with the PyTree handler (what the Standard handler that wrote it wraps), which
        # can restore a subtree; the data item is never read here.
        handlers = {STATE_ITEM: ocp.PyTreeCheckpointHandler(), CONFIG_ITEM: ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=handlers)

    @property
    def directory(self) -> str:
        return os.fspath(self._manager.directory)

    def all_steps(self) -> list[int]:
        """Finalized steps, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self, metric: str = BEST_METRIC) -> int | None:
        """The step with the lowest `metric`, or None if no step has one."""
        return best_step(((step, self._manager.metrics(step)) for step in self.all_steps()), metric)

    def saved_config(self, step: int | None = None) -> dict | None:
        """The config saved with `step` (default: the latest), or None if it was saved without one."""
        import orbax.checkpoint as ocp

        step = resolve_step(self.all_steps(), step, self.directory)
        if not self._item_path(step, CONFIG_ITEM).exists():
            return None
        return self._manager.restore(step, args=ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()}))[
            CONFIG_ITEM]

    def restore_codec(self, config, step: int | None = None):
        """(codec, step): the codec saved at `step` (default: the latest) for `config`, on one device (inference:
        whatever mesh trained it). Only the state's codec subtree is read."""
        import jax
        import orbax.checkpoint as ocp
        from flax import nnx

        from jaxcodec.models.codec import Codec

        step = resolve_step(self.all_steps(), step, self.directory)
        graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: Codec(config, rngs=nnx.Rngs(config.train.seed))),
                                           nnx.Param, ...)
        one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=one_device),
                                {CODEC_KEY: {"params": params, "rest": rest}})
        check_shapes(step, self._state_metadata(step), abstract, under=CODEC_KEY)
        restore = ocp.args.PyTreeRestore(abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                                         partial_restore=True)
        codec_state = self._manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: restore}))[STATE_ITEM][
            CODEC_KEY]
        return nnx.merge(graphdef, codec_state["params"], codec_state["rest"]), step

    def _item_path(self, step: int, item: str):
        import orbax.checkpoint as ocp

        return ocp.path.step.standard_name_format().find_step(self._manager.directory, step).path / item

    def _state_metadata(self, step: int):
        """The state item's metadata, or None when its _METADATA file is missing. Read with the item's handler,
        not the manager's `item_metadata`, which would warn on every call that it cannot read the data item."""
        import orbax.checkpoint as ocp

        try:
            return ocp.PyTreeCheckpointHandler().metadata(self._item_path(step, STATE_ITEM))
        except FileNotFoundError:
            return None

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> SavedCheckpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_codec(source: str | os.PathLike, step: int | str | None = None) -> tuple[Any, Any, int | None]:
    """(config, codec, step) of a training workdir (or its checkpoints folder) at `step`: None = latest, "best" =
    lowest validation mel loss, or a step number; or of a file written by `jaxcodec export` (step None). Raises
    FileNotFoundError / ValueError / CheckpointError with what to do."""
    from jaxcodec import config as config_lib

    if Path(source).is_file():
        from jaxcodec.interop import files

        if step is not None:
            raise ValueError(f"{source} is an exported file with one set of weights: it has no steps")
        config, codec = files.load_exported(source)
        return config, codec, None
    directory = checkpoints_folder(source)
    if not directory.is_dir():
        raise FileNotFoundError(f"{source}: no such training workdir")
    with SavedCheckpoints(directory) as saved_steps:
        if saved_steps.latest_step() is None:
            raise FileNotFoundError(f"{directory}: no finished checkpoint (has training saved one yet?)")
        if step == BEST_STEP:
            step = saved_steps.best_step()
            if step is None:
                raise ValueError(f"{directory}: no checkpoint has a validation score; use step=None (latest)")
        saved = saved_steps.saved_config(step)
        if saved is None:
            raise ValueError(f"{directory}: checkpoint {step or 'latest'} was saved without its config")
        config = config_lib.from_dict(saved)
        codec, restored = saved_steps.restore_codec(config, step=step if isinstance(step, int) else None)
    return config, codec, restored
