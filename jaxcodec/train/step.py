"""The train step: a pure function (state, batch) → (state, metrics), jitted over the mesh; the state is a
`state.TrainState`, and the optimizers (`state.Optimizers`) are built once from the config and passed in.

Two compiled programs: the GAN step, and before `train.disc_warmup_steps` (or with `disc.kinds: []`) the
generator-only step, which has no discriminator work in it at all (`adversarial_at` says which a step runs; the
loop switches between them, so a resume on either side of the switch continues the same trajectory).

Order within a step (one generator forward):
1. Generator forward on the batch; the generator loss uses the discriminators as they are at the start of the
   step (EnCodec, HiFi-GAN): reconstruction (L1 + multi-scale mel) + commitment + λs·semantic + λa·acoustic, and
   once `train.disc_warmup_steps` have passed, adversarial + feature matching. With `loss.balancer`, the
   waveform losses (l1, mel, adv, feat) are combined by EnCodec's gradient balancer on the decoded waveform.
2. Generator update (AdamW, warm-up + cosine, global-norm clipping); then the EMA codebook update from the
   forward's statistics, which are sums over the global batch (identical on every device).
3. Discriminator loss on the real batch and the stop-gradient reconstruction, discriminator update (GAN step
   only; the generator-only step leaves the discriminator state untouched). The discriminators run forward once on
   each batch; both losses are pulled back from those passes (`_grads`).
4. If any loss, gradient or update is not finite, nothing is updated (parameters, optimizer states, codebooks,
   balancer), the step still advances (its batch was consumed), and `skips` counts consecutive skips; the loop
   stops the run after `train.max_consecutive_skips`.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxcodec import compile_cache, losses
from jaxcodec import config as config_lib
from jaxcodec.config import Config
from jaxcodec.data.shards.format import CONTENT, SPEAKER_EMBEDDING, SPEAKER_FRAMES
from jaxcodec.train import sharding
from jaxcodec.train import state as state_lib
from jaxcodec.train.state import Graphs, ModelState, Optimizers, TrainState

KMEANS_KEY = 2**31 - 1  # folded into the run's key for k-means init: a number no step reaches


def _all_finite(tree) -> jax.Array:
    """Whether every value of `tree` is finite, as the finiteness of its global norm (a NaN or Inf anywhere makes
    the sum of squares NaN or Inf; so does a finite gradient whose norm overflows float32, which counts as
    non-finite too). The same norm feeds gradient clipping and the metrics, and XLA computes it once. A per-leaf
    `isfinite` reduction combined with `jnp.all` became a chain of ~240 scalar ands that XLA copied into every
    parameter's and optimizer state's select: the base GAN step had 428k HLO instructions, compiled in 80 s and
    took 20 s to load from the compilation cache (bench/NOTES.md)."""
    if not jax.tree.leaves(tree):
        return jnp.array(True)
    return jnp.isfinite(optax.tree.norm(tree))


def _select(keep_new: jax.Array, new, old):
    return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def _teachers(config: Config, batch: dict) -> tuple[jax.Array, jax.Array]:
    """The content teacher's frames and the speaker teacher's target (utterance or frame features), float32."""
    speaker_key = SPEAKER_FRAMES if config.model.acoustic_mode == "frame" else SPEAKER_EMBEDDING
    return batch[CONTENT].astype(jnp.float32), batch[speaker_key].astype(jnp.float32)


def _direct_terms(config: Config, out, content, speaker) -> dict[str, jax.Array]:
    """Losses that reach the generator other than through its decoded waveform."""
    lc = config.loss
    frame_mask = out.mask_bt if config.model.acoustic_mode == "frame" else None
    return {
        "commit": out.quantizer.commitment_loss,
        "semantic": losses.semantic_loss(out.semantic_btd, content, out.mask_bt, axis=lc.semantic_axis),
        "acoustic": losses.acoustic_loss(out.acoustic, speaker, lc.acoustic_temperature, frame_mask),
    }


def guidance_floors(config: Config, batch: dict, mask_bt: jax.Array, n_frames: int) -> dict[str, jax.Array]:
    """What a constant student reaches on this batch, beside each guidance loss (losses.acoustic_floor,
    losses.semantic_floor): `loss/acoustic_floor`, `loss/semantic_floor`."""
    content, speaker = _teachers(config, batch)
    frame_mask = mask_bt if config.model.acoustic_mode == "frame" else None
    return {"semantic_floor": losses.semantic_floor(content, mask_bt, config.loss.semantic_axis, n_frames),
            "acoustic_floor": losses.acoustic_floor(speaker, config.loss.acoustic_temperature, frame_mask)}


def _weights(config: Config) -> dict[str, float]:
    lc = config.loss
    return {"l1": lc.lambda_time, "mel": lc.lambda_mel, "adv": lc.lambda_adv, "feat": lc.lambda_feat,
            "commit": lc.lambda_commit, "semantic": lc.lambda_semantic, "acoustic": lc.lambda_acoustic}


class StepGradients(NamedTuple):
    """What one step's forward and backward passes produce (`_grads`)."""

    generator: Any  # gradients w.r.t. the codec's parameters
    terms: dict[str, jax.Array]  # unweighted loss terms
    codec_out: Any  # the generator forward's CodecOutput (codebook statistics)
    balancer: dict  # the balancer's new EMA state (the old one when it is off)
    balancer_metrics: dict[str, jax.Array]
    disc_loss: jax.Array | None  # None in a generator-only step
    disc: Any  # gradients w.r.t. the discriminators' parameters; None in a generator-only step


def _grads(graphs: Graphs, config: Config, state: TrainState, batch: dict, key, adversarial: bool
           ) -> StepGradients:
    """Generator and discriminator gradients of one step, from one generator forward and, when `adversarial`,
    one discriminator forward on each of the real and the reconstructed batch.

    The generator's loss and the discriminators' loss both need D(x) and D(x̂) at the step's discriminator
    parameters, so each is computed once (`jax.vjp`) and pulled back twice: w.r.t. x̂ for the generator, w.r.t.
    the parameters for the discriminators. Written as two separate losses (EnCodec/audiocraft, HiFi-GAN) this is
    four discriminator forwards; XLA does not merge them (measured: 371 → 302 GFLOP per base step at 4 × 1 s).
    The waveform losses' gradient w.r.t. x̂ is then pulled back through the generator together with the direct
    losses; with `loss.balancer`, EnCodec's balancer rescales the per-loss gradients w.r.t. x̂ first.

    `adversarial=False` (before `train.disc_warmup_steps`, or with no discriminators) is the generator-only
    step: no discriminator pass at all, and the balancer, when on, balances the reconstruction losses alone."""
    lc = config.loss
    wav, mask = batch["wav"], batch["mask"]
    content, speaker = _teachers(config, batch)
    params, rest = state.codec.params, state.codec.rest
    weights = _weights(config)

    def generator(params):
        out = nnx.merge(graphs.codec, params, rest)(wav, mask, key=key)
        direct = _direct_terms(config, out, content, speaker)
        return (out.wav_bn, sum(weights[name] * value for name, value in direct.items())), (out, direct)

    (fake, _), generator_pullback, (out, direct) = jax.vjp(generator, params, has_aux=True)

    # 1. generator: each waveform loss and its gradient w.r.t. x̂
    terms, grads_y = dict(direct), {}
    terms["l1"], grads_y["l1"] = jax.value_and_grad(lambda y: losses.l1_time(wav, y, mask))(fake)
    terms["mel"], grads_y["mel"] = jax.value_and_grad(
        lambda y: losses.mel_loss(wav, y, lc, config.model.sample_rate, mask))(fake)
    if adversarial:
        def discriminators(disc_params, y):
            return nnx.merge(graphs.disc, disc_params, state.disc.rest)(y)

        real_out, real_pullback = jax.vjp(lambda p: discriminators(p, wav), state.disc.params)
        fake_out, fake_pullback = jax.vjp(discriminators, state.disc.params, fake)
        real_fmaps = real_out[1]  # constants of the feature-matching loss (stop-gradient inside it)
        terms["adv"], adv_cotangent = jax.value_and_grad(
            lambda o: losses.generator_adversarial_loss(o[0], lc.adversarial))(fake_out)
        terms["feat"], feat_cotangent = jax.value_and_grad(
            lambda o: losses.feature_matching_loss(real_fmaps, o[1]))(fake_out)
    if not lc.balancer:
        grad_y = weights["l1"] * grads_y["l1"] + weights["mel"] * grads_y["mel"]
        if adversarial:
            adversarial_cotangent = jax.tree.map(
                lambda a, f: (weights["adv"] * a + weights["feat"] * f).astype(a.dtype),
                adv_cotangent, feat_cotangent)  # the outputs' dtype (bfloat16 compute)
            grad_y = grad_y + fake_pullback(adversarial_cotangent)[1]
        balancer, balancer_metrics = state.balancer, {}
    else:
        if adversarial:
            grads_y["adv"] = fake_pullback(adv_cotangent)[1]
            grads_y["feat"] = fake_pullback(feat_cotangent)[1]
        grad_y, balancer, balancer_metrics = losses.balance_gradients(
            grads_y, {name: weights[name] for name in grads_y}, state.balancer, ema_decay=lc.balancer_ema_decay)
    (grads,) = generator_pullback((grad_y, jnp.ones((), jnp.float32)))
    if not adversarial:
        return StepGradients(generator=grads, terms=terms, codec_out=out, balancer=balancer,
                             balancer_metrics=balancer_metrics, disc_loss=None, disc=None)

    # 2. discriminators, on x̂ as it was before the generator's update (only parameter gradients are taken)
    d_loss, (real_cotangent, fake_cotangent) = jax.value_and_grad(
        lambda r, f: losses.discriminator_loss(r, f, lc.adversarial), argnums=(0, 1))(real_out[0], fake_out[0])
    (d_real,) = real_pullback((real_cotangent, jax.tree.map(jnp.zeros_like, real_out[1])))
    d_fake, _ = fake_pullback((fake_cotangent, jax.tree.map(jnp.zeros_like, fake_out[1])))
    d_grads = jax.tree.map(jnp.add, d_real, d_fake)
    return StepGradients(generator=grads, terms=terms, codec_out=out, balancer=balancer,
                         balancer_metrics=balancer_metrics, disc_loss=d_loss, disc=d_grads)


UPDATED = ("codec", "disc", "gen_opt", "disc_opt", "balancer")  # the TrainState fields a non-finite step keeps


def adversarial_at(config: Config, step: int) -> bool:
    """Whether step `step` (0-based) trains against the discriminators: from `train.disc_warmup_steps` on, and
    never without discriminators (`disc.kinds: []`). Before that the loop runs the generator-only step."""
    return bool(config.disc.kinds) and step >= config.train.disc_warmup_steps


def train_step(graphs: Graphs, config: Config, optimizers: Optimizers, state: TrainState, batch: dict,
               adversarial: bool = True) -> tuple[TrainState, dict]:
    """One optimizer step of the generator and, when `adversarial`, of the discriminators. `adversarial` is
    static: the generator-only step is its own compiled program with no discriminator work in it."""
    # A fresh pytree of the pre-step values: nnx.merge reuses the State's Variable objects, so the in-place EMA
    # codebook update below would otherwise also change the "old" values a non-finite step falls back to.
    kept = jax.tree.map(lambda x: x, {name: getattr(state, name) for name in UPDATED})
    step = state.step
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), step)

    # 1-2. generator
    g = _grads(graphs, config, state, batch, key, adversarial)
    updates, gen_opt = optimizers.generator.update(g.generator, state.gen_opt, state.codec.params)
    codec_params = optax.apply_updates(state.codec.params, updates)
    codec = nnx.merge(graphs.codec, codec_params, state.codec.rest)
    usage = codec.quantizer.update(g.codec_out.quantizer.stats)
    _, _, codec_rest = nnx.split(codec, nnx.Param, ...)

    # 3. discriminators (their gradients came from the same forwards, at the step's starting parameters)
    disc_params, disc_opt = state.disc.params, state.disc_opt
    if adversarial:
        d_updates, disc_opt = optimizers.disc.update(g.disc, disc_opt, disc_params)
        disc_params = optax.apply_updates(disc_params, d_updates)

    # 4. all or nothing
    weights = _weights(config)
    total = sum(weights[name] * value for name, value in g.terms.items())
    # The updates too: finite gradients still give a non-finite update under a NaN or overflowing learning rate or
    # optimizer state, and applying it would leave every parameter NaN.
    finite = jnp.isfinite(total) & _all_finite(g.generator) & _all_finite(updates)
    if adversarial:
        finite = finite & jnp.isfinite(g.disc_loss) & _all_finite(g.disc) & _all_finite(d_updates)
    candidate = {
        "codec": ModelState(codec_params, codec_rest),
        "disc": ModelState(disc_params, state.disc.rest),
        "gen_opt": gen_opt, "disc_opt": disc_opt, "balancer": g.balancer,
    }
    new_state = TrainState(
        **_select(finite, candidate, kept),
        step=step + 1,
        rng=state.rng,
        skips=jnp.where(finite, 0, state.skips + 1),
        skipped=state.skipped + (~finite).astype(jnp.int32),
    )
    floors = guidance_floors(config, batch, g.codec_out.mask_bt, g.codec_out.semantic_btd.shape[1])
    metrics = {
        "loss/total": total,
        # The encoder's output scale: a latent that grows without bound is how a guidance loss's runaway shows
        # before the commitment loss explodes (models/guidance.py).
        "latent_rms": losses.masked_rms(g.codec_out.latents_btd, g.codec_out.mask_bt),
        **{f"loss/{name}": value for name, value in g.terms.items()},
        **{f"loss/{name}": value for name, value in floors.items()},
        "grad_norm/generator": optax.tree.norm(g.generator),
        "lr/generator": optimizers.generator_learning_rate(step),
        "adversarial_on": jnp.float32(adversarial),
        "skipped": (~finite).astype(jnp.int32),
        **{f"codebook/{name}": value for name, value in usage.items()},
        **{f"balancer/{name}": value for name, value in g.balancer_metrics.items()},
    }
    if adversarial:
        metrics.update({"loss/disc": g.disc_loss, "grad_norm/disc": optax.tree.norm(g.disc)})
    return new_state, metrics


def init_codebooks(graphs: Graphs, config: Config, state: TrainState, batch: dict) -> TrainState:
    """k-means initialisation of the RVQ codebooks from one batch's latents (EnCodec), before the first step."""
    codec = state_lib.merge_codec(graphs, state)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), KMEANS_KEY)
    codec.init_codebooks(batch["wav"], batch["mask"], key)
    _, _, rest = nnx.split(codec, nnx.Param, ...)
    return state.replace(codec=ModelState(state.codec.params, rest))


def jit_step(graphs: Graphs, config: Config, state_shardings, batch_sharding, adversarial: bool = True,
             optimizers: Optimizers | None = None):
    """The step jitted over the mesh: state in and out with its shardings (donated), batch split over devices,
    metrics replicated. `adversarial=False`: the generator-only step (see `adversarial_at`). `optimizers`:
    those the state was initialised with (default: built from the config, as `state.create` builds them)."""
    optimizers = optimizers if optimizers is not None else state_lib.optimizers(config)
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(lambda state, batch: train_step(graphs, config, optimizers, state, batch, adversarial),
                   in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, replicated),
                   donate_argnums=0)


class StepPrograms:
    """The compiled steps (generator-only and GAN), each built once, in a background thread: loaded from the
    compiled-step cache (`jaxcodec.compile_cache`) when it has them, else compiled from shapes alone.
    `prepare(adversarial)` starts building one, so a starting run loads or compiles its first step while it
    builds its abstract state, restores the checkpoint (or initialises) and starts the input pipeline;
    `programs[adversarial]` waits for it.

    The cache key needs only what decides the program besides jaxcodec's source: the config, the mesh and the
    batch's shapes (`batch_shapes`: {key: (global shape, dtype)}). Compiling also needs the state's shapes and
    shardings, which the loop hands over with `provide` once it has them."""

    def __init__(self, config: Config, mesh: jax.sharding.Mesh, batch_sharding, batch_shapes: dict):
        self._config, self._batch_sharding = config, batch_sharding
        self._optimizers = state_lib.optimizers(config)  # one set for both programs (not part of the cache key)
        self._abstract_batch = {key: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
                                for key, (shape, dtype) in sorted(batch_shapes.items())}
        batch = sorted((key, shape, str(dtype)) for key, (shape, dtype) in batch_shapes.items())
        self._key = "\n".join([json.dumps(config_lib.to_dict(config), sort_keys=True),
                               f"mesh {dict(mesh.shape)} devices {[d.id for d in mesh.devices.flat]}",
                               f"batch {batch_sharding.spec} {batch}"])
        self._state: concurrent.futures.Future = concurrent.futures.Future()  # (graphs, shardings, shapes)
        self._programs: dict[bool, concurrent.futures.Future] = {}
        self._met: set[bool] = set()

    def provide(self, graphs: Graphs, state_shardings, state_shapes) -> None:
        """The state's graphs, shardings and shapes (jax.eval_shape): what a compile needs and a load does not."""
        self._state.set_result((graphs, state_shardings, state_shapes))

    def prepare(self, adversarial: bool) -> None:
        if adversarial in self._programs:
            return
        future = self._programs[adversarial] = concurrent.futures.Future()

        def build():
            try:
                future.set_result(self._build(adversarial))
            except BaseException as err:  # handed to the caller by result()
                future.set_exception(err)

        # A daemon thread: a run that fails while its step compiles exits without waiting for the compiler.
        threading.Thread(target=build, name=f"jaxcodec-compile-{adversarial}", daemon=True).start()

    def __getitem__(self, adversarial: bool):
        self.prepare(adversarial)
        program = self._programs[adversarial].result()
        if adversarial not in self._met:  # its first run: every process has it (sharding.processes_meet)
            sharding.processes_meet(f"train_step adversarial={adversarial}")
            self._met.add(adversarial)
        return program

    def _build(self, adversarial: bool):
        description = f"train_step adversarial={adversarial}\n{self._key}"
        program = compile_cache.load(description)
        if program is not None:
            return program
        graphs, state_shardings, state_shapes = self._state.result()
        abstract_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh, weak_type=s.weak_type),
            state_shapes, state_shardings)
        jitted = jit_step(graphs, self._config, state_shardings, self._batch_sharding, adversarial,
                          self._optimizers)
        return compile_cache.compile_and_store(jitted, abstract_state, self._abstract_batch, description=description)


def jit_init_codebooks(graphs: Graphs, config: Config, state_shardings, batch_sharding):
    return jax.jit(lambda state, batch: init_codebooks(graphs, config, state, batch),
                   in_shardings=(state_shardings, batch_sharding), out_shardings=state_shardings, donate_argnums=0)


def run_init_codebooks(graphs: Graphs, config: Config, state_shardings, batch_sharding, state: TrainState,
                       batch: dict) -> TrainState:
    """k-means codebooks from `batch`, compiled first, run once every process has it (sharding.processes_meet),
    and finished before the caller dispatches the first step, so a stuck k-means shows as itself.

    Known hazard (open): on XLA:CPU with several devices, this program loaded from JAX's persistent cache (not
    compiled here) can deadlock: the deserialized executable runs its collectives out of program order on different
    devices (7 devices in a loop's all-reduce, 1 in an all-gather), each holding one of the shared intra-op threads
    (as many as devices). Measured with the program alone: 3 of 3 processes stuck within 100 calls when cached, 0 of 2
    in 1000 calls when compiled."""
    program = jit_init_codebooks(graphs, config, state_shardings, batch_sharding).lower(state, batch).compile()
    sharding.processes_meet("init_codebooks")
    return jax.block_until_ready(program(state, batch))
