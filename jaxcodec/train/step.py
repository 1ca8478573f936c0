"""The train step: a pure function (state, batch) → (state, metrics), jitted over the mesh.

Order within a step (one generator forward):
1. Generator forward on the batch; the generator loss uses the discriminators as they are at the start of the
   step (EnCodec, HiFi-GAN): reconstruction (L1 + multi-scale mel) + commitment + λs·semantic + λa·acoustic, and
   once `train.disc_warmup_steps` have passed, adversarial + feature matching. With `loss.balancer`, the
   waveform losses (l1, mel, adv, feat) are combined by EnCodec's gradient balancer on the decoded waveform.
2. Generator update (AdamW, warm-up + cosine, global-norm clipping); then the EMA codebook update from the
   forward's statistics, which are sums over the global batch (identical on every device).
3. Discriminator loss on the real batch and the stop-gradient reconstruction, discriminator update (only after
   the warm-up; before it the discriminator state is left untouched).
4. If any loss or gradient is not finite, nothing is updated (parameters, optimizer states, codebooks,
   balancer), the step still advances (its batch was consumed), and `skips` counts consecutive skips; the loop
   stops the run after `train.max_consecutive_skips`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxcodec import losses
from jaxcodec.config import Config
from jaxcodec.train import state as state_lib
from jaxcodec.train.state import BALANCED_LOSSES, Graphs

KMEANS_KEY = 2**31 - 1  # folded into the run's key for k-means init: a number no step reaches


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _select(keep_new: jax.Array, new, old):
    return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def _teachers(config: Config, batch: dict) -> tuple[jax.Array, jax.Array]:
    acoustic_key = "ecapa_frames" if config.model.acoustic_mode == "frame" else "ecapa"
    return batch["hubert"].astype(jnp.float32), batch[acoustic_key].astype(jnp.float32)


def _direct_terms(config: Config, out, hubert, ecapa) -> dict[str, jax.Array]:
    """Losses that reach the generator other than through its decoded waveform."""
    lc = config.loss
    frame_mask = out.mask_bt if config.model.acoustic_mode == "frame" else None
    return {
        "commit": out.quantizer.commitment_loss,
        "semantic": losses.semantic_loss(out.semantic_btd, hubert, out.mask_bt, axis=lc.semantic_axis),
        "acoustic": losses.acoustic_loss(out.acoustic, ecapa, lc.acoustic_temperature, frame_mask),
    }


def _waveform_terms(config: Config, disc, wav, mask, fake) -> dict[str, jax.Array]:
    """Losses on the decoded waveform `fake` (the balancer's domain)."""
    lc = config.loss
    fake_logits, fake_fmaps = disc(fake)
    _, real_fmaps = disc(wav)
    return {
        "l1": losses.l1_time(wav, fake, mask),
        "mel": losses.mel_loss(wav, fake, lc, config.model.sample_rate, mask),
        "adv": losses.generator_adversarial_loss(fake_logits, lc.adversarial),
        "feat": losses.feature_matching_loss(real_fmaps, fake_fmaps),
    }


def _weights(config: Config, adversarial_on: jax.Array) -> dict[str, jax.Array]:
    lc = config.loss
    return {"l1": lc.lambda_time, "mel": lc.lambda_mel, "adv": lc.lambda_adv * adversarial_on,
            "feat": lc.lambda_feat * adversarial_on, "commit": lc.lambda_commit, "semantic": lc.lambda_semantic,
            "acoustic": lc.lambda_acoustic}


def _generator_grads(graphs: Graphs, config: Config, state: dict, disc, batch: dict, key, adversarial_on):
    """(grads w.r.t. the generator's params, loss terms, forward output, new balancer state, balancer metrics)."""
    wav, mask = batch["wav"], batch["mask"]
    hubert, ecapa = _teachers(config, batch)
    params, rest = state["codec"]["params"], state["codec"]["rest"]
    weights = _weights(config, adversarial_on)

    def forward(params):
        out = nnx.merge(graphs.codec, params, rest)(wav, mask, key=key)
        direct = _direct_terms(config, out, hubert, ecapa)
        return out, direct

    if not config.loss.balancer:
        def total_loss(params):
            out, direct = forward(params)
            terms = {**direct, **_waveform_terms(config, disc, wav, mask, out.wav_bn)}
            return sum(weights[name] * value for name, value in terms.items()), (terms, out)

        (_, (terms, out)), grads = jax.value_and_grad(total_loss, has_aux=True)(params)
        return grads, terms, out, state["balancer"], {}

    # EnCodec's balancer: per-loss gradients w.r.t. the decoded waveform, rescaled to fixed shares of one
    # gradient norm, then pulled back through the generator together with the direct losses.
    def pulled(params):
        out, direct = forward(params)
        direct_total = sum(weights[name] * value for name, value in direct.items())
        return (out.wav_bn, direct_total), (out, direct)

    (fake, _), pullback, (out, direct) = jax.vjp(pulled, params, has_aux=True)
    wave_terms, wave_grads = {}, {}
    for name in BALANCED_LOSSES:
        value, grad = jax.value_and_grad(lambda y, n=name: _waveform_terms(config, disc, wav, mask, y)[n])(fake)
        wave_terms[name] = value
        # Before the discriminator starts, adversarial gradients are zero (their EMA norms still update).
        wave_grads[name] = grad * (adversarial_on if name in ("adv", "feat") else 1.0)
    static_weights = {"l1": config.loss.lambda_time, "mel": config.loss.lambda_mel, "adv": config.loss.lambda_adv,
                      "feat": config.loss.lambda_feat}
    combined, balancer, balancer_metrics = losses.balance_gradients(
        wave_grads, static_weights, state["balancer"], ema_decay=config.loss.balancer_ema_decay)
    (grads,) = pullback((combined, jnp.ones((), jnp.float32)))
    return grads, {**direct, **wave_terms}, out, balancer, balancer_metrics


UPDATED = ("codec", "disc", "gen_opt", "disc_opt", "balancer")  # what a non-finite step leaves untouched


def train_step(graphs: Graphs, config: Config, state: dict, batch: dict) -> tuple[dict, dict]:
    # A fresh pytree of the pre-step values: nnx.merge reuses the State's Variable objects, so the in-place EMA
    # codebook update below would otherwise also change the "old" values a non-finite step falls back to.
    kept = jax.tree.map(lambda x: x, {name: state[name] for name in UPDATED})
    step = state["step"]
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
    adversarial_on = (step >= config.train.disc_warmup_steps).astype(jnp.float32)
    disc = nnx.merge(graphs.disc, state["disc"]["params"], state["disc"]["rest"])

    # 1-2. generator
    grads, terms, out, balancer, balancer_metrics = _generator_grads(graphs, config, state, disc, batch, key,
                                                                     adversarial_on)
    gen_tx = state_lib.generator_optimizer(config)
    updates, gen_opt = gen_tx.update(grads, state["gen_opt"], state["codec"]["params"])
    codec_params = optax.apply_updates(state["codec"]["params"], updates)
    codec = nnx.merge(graphs.codec, codec_params, state["codec"]["rest"])
    usage = codec.quantizer.update(out.quantizer.stats)
    _, _, codec_rest = nnx.split(codec, nnx.Param, ...)

    # 3. discriminators, on the reconstruction as it was before this step's generator update
    fake = jax.lax.stop_gradient(out.wav_bn)

    def disc_loss(disc_params):
        d = nnx.merge(graphs.disc, disc_params, state["disc"]["rest"])
        real_logits, _ = d(batch["wav"])
        fake_logits, _ = d(fake)
        return losses.discriminator_loss(real_logits, fake_logits, config.loss.adversarial)

    d_loss, d_grads = jax.value_and_grad(disc_loss)(state["disc"]["params"])
    disc_tx = state_lib.disc_optimizer(config)
    d_updates, disc_opt = disc_tx.update(d_grads, state["disc_opt"], state["disc"]["params"])
    disc_params = optax.apply_updates(state["disc"]["params"], d_updates)
    disc_on = adversarial_on > 0
    disc_params = _select(disc_on, disc_params, state["disc"]["params"])
    disc_opt = _select(disc_on, disc_opt, state["disc_opt"])

    # 4. all or nothing
    total = sum(_weights(config, adversarial_on)[name] * value for name, value in terms.items())
    finite = (jnp.isfinite(total) & jnp.isfinite(d_loss) & _all_finite(grads) & _all_finite(d_grads))
    candidate = {
        "codec": {"params": codec_params, "rest": codec_rest},
        "disc": {"params": disc_params, "rest": state["disc"]["rest"]},
        "gen_opt": gen_opt, "disc_opt": disc_opt, "balancer": balancer,
    }
    new_state = {
        **_select(finite, candidate, kept),
        "step": step + 1,
        "rng": state["rng"],
        "skips": jnp.where(finite, 0, state["skips"] + 1),
        "skipped": state["skipped"] + (~finite).astype(jnp.int32),
    }
    metrics = {
        "loss/total": total,
        **{f"loss/{name}": value for name, value in terms.items()},
        "loss/disc": d_loss,
        "grad_norm/generator": optax.tree.norm(grads),
        "grad_norm/disc": optax.tree.norm(d_grads),
        "lr/generator": state_lib.learning_rate(config.optim, config.optim.learning_rate,
                                                config.train.num_steps)(step),
        "adversarial_on": adversarial_on,
        "skipped": (~finite).astype(jnp.int32),
        **{f"codebook/{name}": value for name, value in usage.items()},
        **{f"balancer/{name}": value for name, value in balancer_metrics.items()},
    }
    return new_state, metrics


def init_codebooks(graphs: Graphs, config: Config, state: dict, batch: dict) -> dict:
    """k-means initialisation of the RVQ codebooks from one batch's latents (EnCodec), before the first step."""
    codec = state_lib.merge_codec(graphs, state)
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), KMEANS_KEY)
    codec.init_codebooks(batch["wav"], batch["mask"], key)
    _, _, rest = nnx.split(codec, nnx.Param, ...)
    return {**state, "codec": {"params": state["codec"]["params"], "rest": rest}}


def jit_step(graphs: Graphs, config: Config, state_shardings, batch_sharding):
    """The step jitted over the mesh: state in and out with its shardings (donated), batch split over devices,
    metrics replicated."""
    replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(lambda state, batch: train_step(graphs, config, state, batch),
                   in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, replicated),
                   donate_argnums=0)


def jit_init_codebooks(graphs: Graphs, config: Config, state_shardings, batch_sharding):
    return jax.jit(lambda state, batch: init_codebooks(graphs, config, state, batch),
                   in_shardings=(state_shardings, batch_sharding), out_shardings=state_shardings, donate_argnums=0)
