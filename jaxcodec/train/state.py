"""The train state: a typed pytree of arrays (`TrainState`: jit, sharding and checkpoints see ordinary data) plus
the two graph definitions that turn parts of it back into modules inside the step (`nnx.merge`, as flax's gemma
example), and the optimizers (`Optimizers`), built once from the config and handed to the step.

Parameters are born sharded: `create` jits the initialisation with the state's shardings as out_shardings, so no
host ever holds a full replicated copy before it is laid out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

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


@dataclasses.dataclass(frozen=True)
class Optimizers:
    """The generator's and the discriminators' optimizers, built once from the config (`optimizers`) and passed
    to the step, and the generator's learning-rate schedule (a step metric)."""

    generator: optax.GradientTransformation
    disc: optax.GradientTransformation
    generator_learning_rate: optax.Schedule


def optimizers(config: Config) -> Optimizers:
    return Optimizers(generator_optimizer(config), disc_optimizer(config),
                      learning_rate(config.optim, config.optim.learning_rate, config.train.num_steps))


class _ByName:
    """`state["codec"]` reads `state.codec`: the state was a dict before it was typed, and the training tests
    (and callers written for the dict) index it so. jaxcodec's own code uses the attributes."""

    def __getitem__(self, name: str):
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


@struct.dataclass
class ModelState(_ByName):
    """One model's variables as `nnx.split(model, nnx.Param, ...)` gives them."""

    params: nnx.State  # the nnx.Param variables
    rest: nnx.State  # everything else (codebooks and their EMA statistics, ...)


@struct.dataclass
class TrainState(_ByName):
    """Everything a step reads and writes; a checkpoint holds it whole.

    The fields are in alphabetical order, the order the state flattened in when it was a dict (jax sorts dict
    keys): the jitted step's arguments, and so its compiled program, are the same. Checkpoints name each array
    by its path (`codec.params.encoder...`), which is the dict's too, so checkpoints of the dict state restore."""

    balancer: dict  # EnCodec balancer EMA state (empty when the balancer is off)
    codec: ModelState
    disc: ModelState
    disc_opt: optax.OptState  # optax state of the discriminators' params
    gen_opt: optax.OptState  # optax state of the generator's params
    rng: jax.Array  # uint32 key data: the run's base key; each step folds in its step number
    skipped: jax.Array  # int32: non-finite steps in all
    skips: jax.Array  # int32: consecutive non-finite steps
    step: jax.Array  # int32: steps taken


def build_models(config: Config) -> tuple[Codec, Discriminators]:
    codec = Codec(config, rngs=nnx.Rngs(config.train.seed))
    disc = Discriminators(config.disc, dtype=config.model.compute_dtype,
                          remat_policy=config.train.remat_policy_of("disc"),
                          rngs=nnx.Rngs(config.train.seed + DISC_SEED_OFFSET))
    return codec, disc


def _init(config: Config) -> tuple[Graphs, TrainState]:
    codec, disc = build_models(config)
    codec_graph, codec_params, codec_rest = nnx.split(codec, nnx.Param, ...)
    disc_graph, disc_params, disc_rest = nnx.split(disc, nnx.Param, ...)
    built_optimizers = optimizers(config)
    state = TrainState(
        codec=ModelState(codec_params, codec_rest),
        disc=ModelState(disc_params, disc_rest),
        gen_opt=built_optimizers.generator.init(codec_params),
        disc_opt=built_optimizers.disc.init(disc_params),
        balancer=losses.balancer_init(BALANCED_LOSSES) if config.loss.balancer else {},
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(config.train.seed)),
        skips=jnp.zeros((), jnp.int32),
        skipped=jnp.zeros((), jnp.int32),
    )
    return Graphs(codec_graph, disc_graph), state


def abstract(config: Config) -> tuple[Graphs, TrainState]:
    """Graphs and the state's shapes/dtypes, with nothing allocated."""
    graphs_box = {}

    def init_state():
        graphs_box["graphs"], state = _init(config)
        return state

    shapes = jax.eval_shape(init_state)
    return graphs_box["graphs"], shapes


def create(config: Config, mesh: jax.sharding.Mesh) -> tuple[Graphs, TrainState, Any]:
    """(graphs, state born sharded on `mesh`, the state's shardings)."""
    graphs, shapes = abstract(config)
    shardings = sharding.state_shardings(shapes, mesh, config.mesh)
    state = jax.jit(lambda: _init(config)[1], out_shardings=shardings)()
    return graphs, state, shardings


def abstract_with_shardings(shapes, shardings):
    """What a checkpoint restore needs: ShapeDtypeStructs that say where each array goes."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def merge_codec(graphs: Graphs, state: TrainState) -> Codec:
    return nnx.merge(graphs.codec, state.codec.params, state.codec.rest)
