"""The device mesh and where every array lives. Shardings are config data (`MeshConfig`): one mesh with axes
('data', 'fsdp'); a batch's leading axis is split over both axes (every device holds distinct examples); parameters
and optimizer state are replicated, or under `param_sharding: fsdp` each array of at least `fsdp_min_size` values
is split along its largest axis that the fsdp axis divides (ZeRO-3 style: XLA gathers it where it is used)."""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxcodec.config import MeshConfig


def maybe_initialize_distributed() -> None:
    """Multi-host runs: `jax.distributed.initialize()` when the environment says this is one process of several
    (JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID, or a cluster JAX auto-detects such as SLURM or a
    TPU pod). A single process does nothing."""
    if jax.distributed.is_initialized():
        return
    # CPU processes need a collectives backend to all-reduce between them (GPUs and TPUs bring their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    explicit = all(os.environ.get(k) for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"))
    if explicit:
        jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JAX_PROCESS_ID"]))
    elif os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()


def mesh_shape(config: MeshConfig, device_count: int) -> tuple[int, ...]:
    """`mesh.shape` with its one -1 resolved to the devices left over; a one-line error when it cannot fit."""
    shape = list(config.shape)
    if len(shape) != len(config.axes):
        raise ValueError(f"mesh.shape {list(config.shape)} needs one size per axis {list(config.axes)}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh.shape {list(config.shape)} may have at most one -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        shape[shape.index(-1)] = device_count // known if known and device_count % known == 0 else 0
    if math.prod(shape) != device_count:
        raise ValueError(f"mesh.shape {list(config.shape)} does not fit {device_count} devices")
    return tuple(shape)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh, with Auto axes: the compiler propagates shardings from the state's and the batch's (GSPMD), so
    model code needs no sharding annotations (Explicit axes would make e.g. k-means' top_k over the sharded
    batch a type error)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(config, len(devices))
    auto = (AxisType.Auto,) * len(shape)
    if jax.process_count() > 1:
        # Process-major order: the batch axis runs over process 0's devices first, so process p's devices own
        # global rows [p·b, (p+1)·b), the rows its input pipeline reads (jaxcodec.data.pipeline).
        ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
        return Mesh(np.asarray(ordered).reshape(shape), tuple(config.axes), axis_types=auto)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, tuple(config.axes), axis_types=auto, devices=devices)  # topology-aware order
    return Mesh(np.asarray(devices).reshape(shape), tuple(config.axes), axis_types=auto)


def batch_spec(config: MeshConfig) -> PartitionSpec:
    """Leading (batch) axis over every mesh axis: data parallel on 'data', and 'fsdp' devices see their own
    examples too (FSDP is data parallel over its axis with sharded parameters)."""
    return PartitionSpec(tuple(config.axes))


def param_spec(shape: Sequence[int], config: MeshConfig, fsdp_size: int) -> PartitionSpec:
    if config.param_sharding == "replicated" or fsdp_size == 1 or math.prod(shape) < config.fsdp_min_size:
        return PartitionSpec()
    divisible = [axis for axis in np.argsort(shape, kind="stable")[::-1] if shape[axis] % fsdp_size == 0]
    if not divisible:
        return PartitionSpec()
    spec: list[str | None] = [None] * len(shape)
    spec[int(divisible[0])] = config.axes[-1]
    return PartitionSpec(*spec)


def state_shardings(abstract_state, mesh: Mesh, config: MeshConfig):
    """A NamedSharding for every leaf of a (possibly abstract) train state, by the `param_sharding` rule."""
    fsdp_size = mesh.shape[config.axes[-1]]

    def sharding(leaf):
        shape = getattr(leaf, "shape", ())
        return NamedSharding(mesh, param_spec(shape, config, fsdp_size))

    return jax.tree.map(sharding, abstract_state)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


# How long processes wait for each other at a meeting point: compiling a program on a loaded CPU host takes minutes.
MEETING_TIMEOUT_MS = 60 * 60 * 1000
_meetings: collections.Counter = collections.Counter()


def processes_meet(name: str) -> None:
    """Several processes: wait until every one has reached this point (a coordination-service barrier, no device
    collective); one process does nothing. Called after a program is built and before its first run: the processes
    reach a new program's first collective as far apart as their build times (one may load it from the persistent
    cache while another compiles it, minutes on a CPU), and XLA:CPU's gloo collectives give a late peer 30 s to
    join before the run fails ("Gloo context initialization failed ... Connect timeout", measured)."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    _meetings[name] += 1  # every process builds the same programs in the same order: the ids agree
    distributed.global_state.client.wait_at_barrier(f"jaxcodec/{name}/{_meetings[name]}", MEETING_TIMEOUT_MS)
