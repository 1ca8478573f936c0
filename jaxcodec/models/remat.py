"""Rematerialisation (`jax.checkpoint`) of a module's forward: its activations are recomputed in the backward pass
instead of kept, trading compute for running memory (`train.remat`, `train.remat_policy`; bench/NOTES.md has the
measured trade at 4, 16 and 64 × 1 s)."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

# What a checkpointed block keeps for its backward pass, besides its inputs.
POLICIES: dict[str, Callable | None] = {
    "nothing": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    "dots": jax.checkpoint_policies.dots_saveable,  # keep conv and matmul outputs, recompute the elementwise ops
}


def call(module: nnx.Module, forward: Callable, policy: str | None, *args):
    """`forward(module, *args)`, checkpointed under `policy` (a POLICIES key), or plainly when `policy` is None."""
    if policy is None:
        return forward(module, *args)
    return nnx.remat(forward, policy=POLICIES[policy])(module, *args)
