"""A training workdir that starts from a given codec (`jaxcodec import`: a peer's weights): its checkpoint at
step 0 holds the codec, with the discriminators and optimizer states fresh, so `jaxcodec.load`, `jaxcodec eval`
and `jaxcodec train --workdir` (fine-tuning) all take it. It lives in train/ because it builds a whole training
state; reading the codec back needs only `jaxcodec.workdir`."""

from __future__ import annotations

from pathlib import Path

from jaxcodec import atomic
from jaxcodec import config as config_lib
from jaxcodec.interop.layout import InteropError
from jaxcodec.workdir import CHECKPOINTS_FOLDER, CONFIG_FILE, IMPORT_FILE


def write_workdir(codec, config, workdir: str | Path, provenance: dict) -> Path:
    """A training workdir whose checkpoint at step 0 holds `codec` (discriminators and optimizer fresh), so
    `jaxcodec.load`, `jaxcodec eval` and `jaxcodec train --workdir` (fine-tuning) all take it."""
    import jax
    from flax import nnx

    from jaxcodec.train import sharding
    from jaxcodec.train import state as state_lib
    from jaxcodec.train.checkpoint import Checkpointer

    workdir = Path(workdir)
    if (workdir / CHECKPOINTS_FOLDER).exists() and any((workdir / CHECKPOINTS_FOLDER).iterdir()):
        raise InteropError(f"{workdir} already holds checkpoints: choose a new -o")
    one_device = config_lib.MeshConfig()
    mesh = sharding.make_mesh(one_device, jax.devices()[:1])
    _, state, _ = state_lib.create(config, mesh)
    _, params, rest = nnx.split(codec, nnx.Param, ...)
    state = state.replace(codec=state_lib.ModelState(params, rest))
    workdir.mkdir(parents=True, exist_ok=True)
    with Checkpointer(workdir / CHECKPOINTS_FOLDER, async_save=False) as checkpointer:
        checkpointer.save(0, state, config=config_lib.to_dict(config), force=True)
        checkpointer.wait()
    atomic.write_json(workdir / CONFIG_FILE, config_lib.to_dict(config))
    atomic.write_json(workdir / IMPORT_FILE, provenance)
    return workdir
