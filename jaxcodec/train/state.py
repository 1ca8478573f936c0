"""The train state: a plain pytree of arrays (so jit, sharding and checkpoints see ordinary data) plus the two
graph definitions that turn parts of it back into modules inside the step (`nnx.merge`, as flax's gemma example).

    state = {
      "codec":   {"params": nnx.State (nnx.Param), "rest": nnx.State (codebooks and other variables)},
      "disc":    {"params": ..., "rest": ...},
      "gen_opt": optax state of the generator's params,   "disc_opt": optax state of the discriminators',
      "balancer": EnCodec balancer EMA state (empty when the balancer is off),
      "step": int32, "rng": uint32 key data (the run's base key; each step folds in its step number),
      "skips": int32 consecutive non-finite steps, "skipped": int32 non-finite steps in all,
    }

Parameters are born sharded: `create` jits the initialisation with the state's shardings as out_shardings, so no
host ever holds a full replicated copy before it is laid out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxcodec import losses
from jaxcodec.config import Config, OptimConfig
from jaxcodec.models.codec import Codec
from jaxcodec.models.discriminators import Discriminators
from jaxcodec.train import sharding

# The losses that act on the decoded waveform: what EnCodec's balancer balances (config.loss.balancer).
BALANCED_LOSSES = ("l1", "mel", "adv", "feat")
DISC_SEED_OFFSET = 1  # the discriminators' init seed is train.seed + 1: independent of the codec's draws


@dataclasses.dataclass(frozen=True)
class Graphs:
    """Static structure of the two models (hashable: a static argument of the jitted step)."""

    codec: Any
    disc: Any


def learning_rate(optim: OptimConfig, peak: float, num_steps: int) -> optax.Schedule:
    """Linear warm-up to `peak`, cosine decay to `peak · min_lr_ratio` at `num_steps`."""
    return optax.warmup_cosine_decay_schedule(0.0, peak, optim.warmup_steps, max(num_steps, optim.warmup_steps + 1),
                                              peak * optim.min_lr_ratio)


def optimizer(optim: OptimConfig, peak: float, num_steps: int) -> optax.GradientTransformation:
    chain = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
    return optax.chain(*chain, optax.adamw(learning_rate(optim, peak, num_steps), b1=optim.b1, b2=optim.b2,
                                           eps=optim.eps, weight_decay=optim.weight_decay))


def generator_optimizer(config: Config) -> optax.GradientTransformation:
    return optimizer(config.optim, config.optim.learning_rate, config.train.num_steps)


def disc_optimizer(config: Config) -> optax.GradientTransformation:
    return optimizer(config.optim, config.optim.disc_learning_rate, config.train.num_steps)


def build_models(config: Config) -> tuple[Codec, Discriminators]:
    codec = Codec(config, rngs=nnx.Rngs(config.train.seed))
    disc = Discriminators(config.disc, dtype=config.model.compute_dtype,
                          remat_policy=config.train.remat_policy_of("disc"),
                          rngs=nnx.Rngs(config.train.seed + DISC_SEED_OFFSET))
    return codec, disc


def _init(config: Config) -> tuple[Graphs, dict]:
    codec, disc = build_models(config)
    codec_graph, codec_params, codec_rest = nnx.split(codec, nnx.Param, ...)
    disc_graph, disc_params, disc_rest = nnx.split(disc, nnx.Param, ...)
    state = {
        "codec": {"params": codec_params, "rest": codec_rest},
        "disc": {"params": disc_params, "rest": disc_rest},
        "gen_opt": generator_optimizer(config).init(codec_params),
        "disc_opt": disc_optimizer(config).init(disc_params),
        "balancer": losses.balancer_init(BALANCED_LOSSES) if config.loss.balancer else {},
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.key(config.train.seed)),
        "skips": jnp.zeros((), jnp.int32),
        "skipped": jnp.zeros((), jnp.int32),
    }
    return Graphs(codec_graph, disc_graph), state


def abstract(config: Config) -> tuple[Graphs, dict]:
    """Graphs and the state's shapes/dtypes, with nothing allocated."""
    graphs_box = {}

    def init_state():
        graphs_box["graphs"], state = _init(config)
        return state

    shapes = jax.eval_shape(init_state)
    return graphs_box["graphs"], shapes


def create(config: Config, mesh: jax.sharding.Mesh) -> tuple[Graphs, dict, Any]:
    """(graphs, state born sharded on `mesh`, the state's shardings)."""
    graphs, shapes = abstract(config)
    shardings = sharding.state_shardings(shapes, mesh, config.mesh)
    state = jax.jit(lambda: _init(config)[1], out_shardings=shardings)()
    return graphs, state, shardings


def abstract_with_shardings(shapes, shardings):
    """What a checkpoint restore needs: ShapeDtypeStructs that say where each array goes."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def merge_codec(graphs: Graphs, state: dict) -> Codec:
    return nnx.merge(graphs.codec, state["codec"]["params"], state["codec"]["rest"])
