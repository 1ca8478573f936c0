"""`train.remat`: rematerialised SEANet blocks and discriminators give the gradients of the plain ones (each
policy), and the rematerialised gradient really recomputes them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcodec.models.codec import Codec
from jaxcodec.models.discriminators import Discriminators
from tests.train.micro import micro_config


def grads_of(module_fn, loss_fn, x):
    module = module_fn()
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    return jax.jit(jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest), x)))(params)


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("policy", ["nothing", "dots"])
def test_rematerialised_codec_and_discriminators_have_the_same_gradients(policy):
    wav = jnp.asarray(0.1 * np.random.default_rng(0).standard_normal((2, 5120)).astype(np.float32))

    def codec_loss(codec, wav):
        return jnp.mean(codec.decoder(codec.encoder(wav[..., None])) ** 2)

    def disc_loss(disc, wav):
        logits, fmaps = disc(wav)
        return sum(jnp.mean(x**2) for x in logits) + sum(jnp.mean(jnp.abs(f)) for fs in fmaps for f in fs)

    for remat in ("seanet", "disc"):
        config = micro_config(train={"remat": remat, "remat_policy": policy})
        plain = micro_config()
        if remat == "seanet":
            expected = grads_of(lambda c=plain: Codec(c, rngs=nnx.Rngs(0)), codec_loss, wav)
            got = grads_of(lambda c=config: Codec(c, rngs=nnx.Rngs(0)), codec_loss, wav)
        else:
            expected = grads_of(lambda c=plain: Discriminators(c.disc, rngs=nnx.Rngs(0)), disc_loss, wav)
            got = grads_of(lambda c=config: Discriminators(c.disc, remat_policy=c.train.remat_policy_of("disc"),
                                                           rngs=nnx.Rngs(0)), disc_loss, wav)
        assert_same(got, expected)


def test_rematerialised_gradient_recomputes_the_blocks():
    """The lowered gradient of the rematerialised encoder-decoder runs its blocks' convolutions again in the backward
    pass (behind optimization barriers). Whether that saves memory is the backend's business: on XLA:CPU the compiled
    step recomputes but holds as much memory as `none` or more (scripts/memory_remat.py, bench/NOTES.md)."""
    wav = jax.ShapeDtypeStruct((2, 5120), jnp.float32)

    def lowered(remat):
        config = micro_config(train={"remat": remat})
        graphdef, params, rest = nnx.split(Codec(config, rngs=nnx.Rngs(0)), nnx.Param, ...)

        def loss(p, wav):
            codec = nnx.merge(graphdef, p, rest)
            return jnp.mean(codec.decoder(codec.encoder(wav[..., None])) ** 2)

        return jax.jit(jax.grad(loss)).lower(params, wav).as_text()

    plain, rematerialised = lowered("none"), lowered("seanet")
    assert "optimization_barrier" not in plain and "optimization_barrier" in rematerialised
    assert rematerialised.count("convolution") > plain.count("convolution")
