"""Where the acoustic guidance enters the codec (jaxcodec/models/guidance.py) and the aligner's input
standardisation (jaxcodec/models/aligner.py), each against a numpy computation by hand."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcodec import config as config_lib
from jaxcodec.models import guidance
from jaxcodec.models.aligner import RELATIVE_VARIANCE_FLOOR, AcousticAligner, standardise_over_batch
from tests.models.test_quantizer import latents, make_rvq

CODEBOOK_SIZE = 16  # make_rvq's


def quantize(z):
    return make_rvq()(z)


def test_acoustic_input_is_the_sum_of_levels_2_on_with_one_straight_through_gradient():
    z = latents()
    target = jax.random.normal(jax.random.key(6), z.shape)
    out = quantize(z)
    mask = jnp.ones(z.shape[:2])
    codes = np.asarray(out.codes_bqt)
    embed = np.asarray(make_rvq().embed[...])
    by_hand = sum(embed[level][codes[:, level]] for level in range(1, codes.shape[1]))  # Σ_{l≥2} q_l
    for centred in (False, True):  # the centring changes the gradient only
        value = guidance.acoustic_input(out.levels_qbtd, out.codes_bqt, mask, CODEBOOK_SIZE, centred=centred)
        np.testing.assert_allclose(np.asarray(value), by_hand, rtol=1e-5, atol=1e-6)
    # Straight through: d/dz of <acoustic_input, target> is the target once, not n_q − 1 times.
    grad = jax.grad(lambda z: jnp.sum(guidance.acoustic_input(
        quantize(z).levels_qbtd, quantize(z).codes_bqt, mask, CODEBOOK_SIZE, centred=False) * target))(z)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(target), rtol=1e-6)


def test_centred_gradient_removes_each_level1_codes_mean_over_its_real_frames():
    z = latents(b=3, t=20)
    target = np.asarray(jax.random.normal(jax.random.key(7), z.shape))
    mask = np.ones(z.shape[:2], np.float32)
    mask[2, 12:] = 0  # a padded example
    out = quantize(z)
    level1 = np.asarray(out.codes_bqt[:, 0])

    def objective(z):
        q = quantize(z)
        return jnp.sum(guidance.acoustic_input(q.levels_qbtd, q.codes_bqt, jnp.asarray(mask), CODEBOOK_SIZE)
                       * target)

    grad = np.asarray(jax.grad(objective)(z))
    expected = np.zeros_like(target)
    for code in np.unique(level1):
        frames = (level1 == code) & (mask > 0)
        expected[frames] = target[frames] - target[frames].mean(axis=0)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    assert np.all(grad[2, 12:] == 0)  # padding gets no gradient
    for code in np.unique(level1):  # what level 1 would absorb is gone: each code's frames sum to zero
        np.testing.assert_allclose(grad[level1 == code].sum(axis=0), 0, atol=1e-5)


def test_standardise_over_batch_by_hand_and_ignores_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(2, 5, 4)).astype(np.float32)
    valid = np.ones((2, 5), bool)
    valid[1, 3:] = False
    x[1, 3:] = 1e6  # padding must not count
    out = np.asarray(standardise_over_batch(jnp.asarray(x), jnp.asarray(valid)))
    real = x[valid].astype(np.float64)
    centred = real - real.mean(axis=0)
    floor = RELATIVE_VARIANCE_FLOOR * np.mean(real**2)
    np.testing.assert_allclose(out[valid], centred / np.sqrt(np.mean(centred**2) + floor), rtol=1e-5, atol=1e-6)
    assert np.all(out[~valid] == 0)


def test_standardise_does_not_amplify_float_noise_of_a_batch_on_one_code():
    """Every frame on one code of levels 2..n_q: the spread is float noise (1e-7 of the scale), and the output
    must stay near zero rather than become unit-scale noise (what made 1 and 8 devices disagree)."""
    rng = np.random.default_rng(1)
    code = rng.normal(size=4).astype(np.float32)
    x = code + 1e-7 * rng.normal(size=(3, 6, 4)).astype(np.float32)
    out = np.asarray(standardise_over_batch(jnp.asarray(x), jnp.ones((3, 6), bool)))
    assert np.sqrt(np.mean(out**2)) < 1e-4
    spread = code + 0.5 * rng.normal(size=(3, 6, 4)).astype(np.float32)  # a real spread is standardised
    out = np.asarray(standardise_over_batch(jnp.asarray(spread), jnp.ones((3, 6), bool)))
    assert abs(np.sqrt(np.mean(out**2)) - 1) < 1e-3


def test_standardise_over_a_batch_sharded_over_8_devices_equals_one_device():
    """The statistics are over the global batch: the batch split over the mesh's data axis gives what one device
    gives, to float reduction order."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    rng = np.random.default_rng(2)
    x = rng.normal(0.3, 0.5, size=(8, 6, 4)).astype(np.float32)
    valid = rng.random((8, 6)) > 0.2
    single = np.asarray(jax.jit(standardise_over_batch)(jnp.asarray(x), jnp.asarray(valid)))
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    by_example = NamedSharding(mesh, PartitionSpec("data"))
    sharded = jax.jit(standardise_over_batch, in_shardings=(by_example, by_example))(
        jax.device_put(x, by_example), jax.device_put(valid, by_example))
    np.testing.assert_allclose(np.asarray(sharded), single, rtol=1e-5, atol=1e-6)


def test_aligner_with_input_norm_ignores_an_offset_and_a_scale_of_its_input():
    config = config_lib.from_dict({"model": {"dimension": 8, "aligner_dim": 16, "aligner_heads": 2,
                                             "acoustic_dim": 6}})
    aligner = AcousticAligner(config.model, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 10, 8))
    offset = jax.random.normal(jax.random.key(2), (8,))
    np.testing.assert_allclose(np.asarray(aligner(x)), np.asarray(aligner(7.5 * x + offset)), rtol=1e-4, atol=1e-5)
    raw = AcousticAligner(config_lib.from_dict({"model": {**config_lib.to_dict(config)["model"],
                                                          "aligner_input_norm": False}}).model, rngs=nnx.Rngs(0))
    assert not np.allclose(np.asarray(raw(x)), np.asarray(raw(7.5 * x + offset)), atol=1e-3)
