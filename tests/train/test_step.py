"""The train step's optional paths on the micro config, one device: EnCodec's balancer (the vjp path) against
the plain gradient of the rescaled losses, and bfloat16 compute against float32."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcodec import losses
from jaxcodec.train import sharding
from jaxcodec.train import state as state_lib
from jaxcodec.train import step as step_lib
from tests.train.micro import CONTENT_DIM, PINNED, SPEAKER_DIM, micro_config


def synthetic_batch(config, seed: int = 0) -> dict:
    """Harmonic tones with random 'teacher' features, the pipeline's batch layout (no shards needed)."""
    rng = np.random.default_rng(seed)
    b, frames = config.train.batch_size, round(config.data.segment_seconds * 50)
    n = frames * config.model.hop_length
    t = np.arange(n) / config.model.sample_rate
    f0 = 100 + 100 * rng.random((b, 1))
    wav = 0.2 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5)) + 0.01 * rng.standard_normal((b, n))
    mask = np.ones((b, n), np.float32)
    mask[0, n // 2:] = 0  # one padded example, as the pipeline gives for short utterances
    return {"wav": (wav * mask).astype(np.float32), "mask": mask,
            "content": rng.standard_normal((b, frames, CONTENT_DIM)).astype(np.float16),
            "speaker_embedding": rng.standard_normal((b, SPEAKER_DIM)).astype(np.float16)}


def one_device_state(config):
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    graphs, state, shardings = state_lib.create(config, mesh)
    return graphs, state, shardings, mesh


def plain_waveform_terms(config, disc, wav, mask, fake, adversarial: bool = True) -> dict:
    """The waveform losses written the plain way, one discriminator pass per use (the reference of `_grads`);
    without `adversarial`, the reconstruction losses alone."""
    lc = config.loss
    terms = {"l1": losses.l1_time(wav, fake, mask),
             "mel": losses.mel_loss(wav, fake, lc, config.model.sample_rate, mask)}
    if adversarial:
        fake_logits, fake_fmaps = disc(fake)
        _, real_fmaps = disc(wav)
        terms["adv"] = losses.generator_adversarial_loss(fake_logits, lc.adversarial)
        terms["feat"] = losses.feature_matching_loss(real_fmaps, fake_fmaps)
    return terms


def plain_generator_loss(graphs, config, state, batch, key, scales, adversarial: bool = True):
    """Σ weight · term over the direct and waveform losses, as a function of the generator's parameters."""
    disc = nnx.merge(graphs.disc, state["disc"]["params"], state["disc"]["rest"])
    content, speaker = step_lib._teachers(config, batch)
    weights = step_lib._weights(config)

    def loss(params):
        out = nnx.merge(graphs.codec, params, state["codec"]["rest"])(batch["wav"], batch["mask"], key=key)
        direct = step_lib._direct_terms(config, out, content, speaker)
        wave = plain_waveform_terms(config, disc, batch["wav"], batch["mask"], out.wav_bn, adversarial)
        return (sum(weights[n] * v for n, v in direct.items())
                + sum(jax.lax.stop_gradient(scales.get(n, weights[n])) * v for n, v in wave.items()))

    return loss


def assert_trees_close(tree, expected):
    flat, flat_expected = jax.tree.leaves(tree), jax.tree.leaves(expected)
    assert len(flat) == len(flat_expected) > 10
    total = np.sqrt(sum(float(jnp.sum(g**2)) for g in flat_expected))
    for g, e in zip(flat, flat_expected, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5 * total, rtol=1e-3)


def test_shared_discriminator_passes_give_the_plain_gradients():
    """`_grads` runs each discriminator once per batch and pulls both losses back from those passes; the
    generator's and the discriminators' gradients must equal jax.grad of the losses written with a pass per use."""
    config = micro_config(train={"disc_warmup_steps": 0})
    graphs, state, _, _ = one_device_state(config)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    key = jax.random.key(7)
    g = jax.jit(lambda state, batch: step_lib._grads(graphs, config, state, batch, key, True))(state, batch)

    @jax.jit
    def reference(state, batch):
        fake = nnx.merge(graphs.codec, state["codec"]["params"], state["codec"]["rest"])(
            batch["wav"], batch["mask"], key=key).wav_bn

        def disc_loss(disc_params):
            disc = nnx.merge(graphs.disc, disc_params, state["disc"]["rest"])
            return losses.discriminator_loss(disc(batch["wav"])[0], disc(jax.lax.stop_gradient(fake))[0],
                                             config.loss.adversarial)

        generator = jax.grad(plain_generator_loss(graphs, config, state, batch, key, {}))(state["codec"]["params"])
        return generator, *jax.value_and_grad(disc_loss)(state["disc"]["params"])

    expected, expected_d_loss, expected_d_grads = reference(state, batch)
    assert_trees_close(g.generator, expected)
    assert_trees_close(g.disc, expected_d_grads)
    np.testing.assert_allclose(float(g.disc_loss), float(expected_d_loss), rtol=1e-5)
    assert all(np.isfinite(float(v)) for v in g.terms.values())


@pytest.mark.parametrize("adversarial", [True, False], ids=["gan_step", "generator_only_step"])
def test_balanced_gradient_is_the_gradient_of_the_rescaled_losses(adversarial):
    """With loss.balancer the step pulls Σ_i s_i ∇_y L_i back through the generator (one vjp), s_i the
    balancer's scales; that must equal jax.grad of Σ_i s_i L_i + the direct losses, computed the plain way.
    The generator-only step balances the reconstruction losses alone (no adversarial term exists yet)."""
    config = micro_config(loss={"balancer": True}, train={"disc_warmup_steps": 0})
    graphs, state, _, _ = one_device_state(config)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    key = jax.random.key(7)

    @jax.jit
    def balanced(state, batch):
        g = step_lib._grads(graphs, config, state, batch, key, adversarial)
        return g.generator, g.terms, g.balancer, g.balancer_metrics

    grads, terms, balancer, metrics = balanced(state, batch)
    balanced_names = state_lib.BALANCED_LOSSES if adversarial else ("l1", "mel")
    scales = {name: metrics[f"balancer_scale/{name}"] for name in balanced_names}
    expected = jax.jit(lambda state, batch, scales: jax.grad(plain_generator_loss(
        graphs, config, state, batch, key, scales, adversarial))(state["codec"]["params"]))(state, batch, scales)
    assert_trees_close(grads, expected)
    # First step: each EMA norm is the step's own norm, so scale_i = (w_i / Σ w) / ‖∇_y L_i‖ (per-example mean).
    w = {"l1": config.loss.lambda_time, "mel": config.loss.lambda_mel, "adv": config.loss.lambda_adv,
         "feat": config.loss.lambda_feat}
    w = {name: w[name] for name in balanced_names}
    for name, weight in w.items():
        norm = float(metrics[f"grad_norm/{name}"])
        assert norm > 0 and np.isclose(float(scales[name]), weight / sum(w.values()) / norm, rtol=1e-5), name
        assert float(balancer["fix"][name]) == 1.0  # the EMA state moved: one update seen
    if not adversarial:  # the adversarial losses' EMA state waits for the GAN to start
        assert float(balancer["fix"]["adv"]) == 0.0 and "balancer_scale/adv" not in metrics
    assert all(np.isfinite(float(v)) for v in terms.values())


def test_generator_only_step_does_no_discriminator_work():
    """Before the discriminators start, the step is its own program: the generator's gradient is that of the
    reconstruction and teacher losses alone, the discriminators and their optimizer state come out bitwise as
    they went in, and the compiled program has none of the discriminators' FLOPs."""
    config = micro_config(train={"disc_warmup_steps": 0})
    graphs, state, shardings, mesh = one_device_state(config)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    key = jax.random.key(7)
    grads = jax.jit(lambda state, batch: step_lib._grads(graphs, config, state, batch, key, False).generator)(
        state, batch)
    expected = jax.jit(lambda state, batch: jax.grad(plain_generator_loss(
        graphs, config, state, batch, key, {}, adversarial=False))(state["codec"]["params"]))(state, batch)
    assert_trees_close(grads, expected)

    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(config.mesh))
    disc_before = jax.device_get({"disc": state["disc"], "disc_opt": state["disc_opt"]})
    flops = {}
    for adversarial in (False, True):
        jitted = step_lib.jit_step(graphs, config, shardings, batch_sharding, adversarial)
        cost = jitted.lower(state, batch).compile().cost_analysis()
        flops[adversarial] = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    new_state, metrics = step_lib.jit_step(graphs, config, shardings, batch_sharding, False)(state, batch)
    new_state, metrics = jax.device_get((new_state, metrics))
    for x, y in zip(jax.tree.leaves(disc_before), jax.tree.leaves({"disc": new_state["disc"],
                                                                    "disc_opt": new_state["disc_opt"]}), strict=True):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    assert "loss/disc" not in metrics and "loss/adv" not in metrics and float(metrics["adversarial_on"]) == 0.0
    assert int(new_state["step"]) == 1 and int(metrics["skipped"]) == 0
    # Measured on the micro config: the generator-only step has 54 % of the GAN step's FLOPs (0.89 of 1.64 GFLOP).
    assert flops[False] < 0.6 * flops[True], flops


def test_bfloat16_train_step_is_finite_and_keeps_float32_state():
    """A whole train step with compute_dtype=bfloat16 (that the encoder really runs in bfloat16 and tracks
    float32 is tests/models/test_codec.py's): finite losses and gradients, nothing skipped, and parameters,
    optimizer state and codebooks stay float32. Its losses are not compared with float32's: at step 0 the
    quantizer's argmin flips on the untrained encoder's near-duplicate latents (see test_training.py), and the mel
    loss of the near-silent untrained reconstruction moved by 27 % with it (measured)."""
    config = micro_config(model={"compute_dtype": "bfloat16"}, rvq=PINNED, train={"disc_warmup_steps": 0},
                          optim={"warmup_steps": 0})
    graphs, state, shardings, mesh = one_device_state(config)
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(config.mesh))
    step_fn = step_lib.jit_step(graphs, config, shardings, batch_sharding)
    new_state, metrics = jax.device_get(step_fn(state, synthetic_batch(config)))
    assert int(metrics["skipped"]) == 0
    checked = {k: float(v) for k, v in metrics.items() if k.startswith(("loss/", "grad_norm/"))}
    assert len(checked) >= 9 and all(np.isfinite(v) for v in checked.values()), checked
    assert checked["grad_norm/generator"] > 0 and checked["grad_norm/disc"] > 0
    for part in ("codec", "disc", "gen_opt", "disc_opt"):
        floats = {x.dtype for x in jax.tree.leaves(new_state[part]) if np.issubdtype(x.dtype, np.floating)}
        assert floats == {np.dtype(np.float32)}, part


def test_a_non_finite_update_is_skipped_like_a_non_finite_gradient():
    """Issue 18 #3: with a NaN learning rate the gradients are finite but the update is not; the step used to
    apply it (every parameter NaN, then saved). Now it is skipped: nothing changes and `skipped` counts it.
    (`validate` refuses such a config at load; dataclasses.replace gets one past it, as a NaN from an overflowing
    optimizer state would.) The generator-only step of a tinier model than micro (no discriminators, LSTMs or
    residual blocks; measured: ~40 s to build and compile on 2 busy cores, the full micro GAN step ~75 s)."""
    config = micro_config(model={"ratios": [20, 16], "lstm_layers": 0, "n_residual_layers": 0, "norm": "none"},
                          disc={"kinds": []}, loss={"mel_form": "encodec"}, rvq={**PINNED, "n_q": 1},
                          optim={"warmup_steps": 0}, train={"batch_size": 2})
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, learning_rate=float("nan")))
    graphs, state, shardings, mesh = one_device_state(config)
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(config.mesh))
    before = jax.device_get(state)
    new_state, metrics = jax.device_get(step_lib.jit_step(graphs, config, shardings, batch_sharding, False)(
        state, synthetic_batch(config)))
    assert np.isfinite(float(metrics["grad_norm/generator"])) and np.isnan(float(metrics["lr/generator"]))
    assert int(metrics["skipped"]) == 1 and int(new_state["skipped"]) == 1 and int(new_state["skips"]) == 1
    for part in step_lib.UPDATED:
        for x, y in zip(jax.tree.leaves(before[part]), jax.tree.leaves(new_state[part]), strict=True):
            np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=part)
