"""The codec end to end: token shapes at the paper's rate, sizes equal to the PyTorch peers, sharding invariance,
and the teacher heads' masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcodec import config as cfg
from jaxcodec.commands.info import count
from jaxcodec.models.aligner import AcousticAligner
from jaxcodec.models.codec import Codec, frame_mask
from jaxcodec.models.seanet import SEANetDecoder, SEANetEncoder

TINY = cfg.load("configs/tiny.yaml")


def test_base_codec_one_second_gives_8_by_50_codes_and_16000_samples():
    config = cfg.load("configs/base.yaml")
    codec = Codec(config, rngs=nnx.Rngs(0))
    wav = 0.1 * jax.random.normal(jax.random.key(0), (1, 16_000))
    codes = nnx.jit(lambda model, w: model.encode(w))(codec, wav)
    assert codes.shape == (1, 8, 50) and codes.dtype == jnp.int32
    assert 0 <= int(codes.min()) and int(codes.max()) < 1024
    assert jax.eval_shape(lambda c: codec.decode(c), codes).shape == (1, 16_000)


def test_seanet_sizes_equal_transformers_encodec_and_speechtokenizer():
    """Counts measured from transformers' EncodecModel (16 kHz, ratios 8·5·4·2) and speechtokenizer 1.0.1
    (spt_base_cfg.json), see tests/test_cli.py for the live comparison."""
    base = cfg.load("configs/base.yaml").model
    for module, expected in ((SEANetEncoder, 7_425_792), (SEANetDecoder, 7_426_018)):
        abstract = nnx.eval_shape(lambda module=module: module(base, rngs=nnx.Rngs(0)))
        assert count(nnx.state(abstract, nnx.Param)) == expected


def test_frame_count_rounds_up_and_decode_trims():
    codec = Codec(TINY, rngs=nnx.Rngs(0))
    wav = jnp.zeros((2, 16_000 + 100))
    out = nnx.eval_shape(lambda model, wav: model(wav), codec, wav)
    assert out.quantizer.codes_bqt.shape == (2, 8, 51)
    assert out.wav_bn.shape == wav.shape
    assert out.semantic_btd.shape == (2, 51, 768) and out.acoustic.shape == (2, 192)


def test_frame_mask_from_sample_mask():
    mask = (jnp.arange(1000) < 700).astype(jnp.float32)[None]
    np.testing.assert_array_equal(np.asarray(frame_mask(mask, 320))[0], [1, 1, 1, 0])


def test_training_forward_identical_on_1_and_8_devices():
    codec = Codec(TINY, rngs=nnx.Rngs(0))
    wav = 0.1 * jax.random.normal(jax.random.key(1), (8, 6400))
    mask = (jnp.arange(6400)[None] < jnp.array([6400, 6400, 3200, 6400, 5120, 6400, 6400, 960])[:, None])
    mask = mask.astype(jnp.float32)
    graphdef, state = nnx.split(codec)

    @jax.jit
    def forward(state, wav, mask):
        model = nnx.merge(graphdef, state)
        model.init_codebooks(wav, mask, jax.random.key(2))
        out = model(wav, mask, key=jax.random.key(3))
        metrics = model.quantizer.update(out.quantizer.stats)
        return out.wav_bn, out.quantizer.codes_bqt, out.quantizer.commitment_loss, out.semantic_btd, \
            out.acoustic, metrics, nnx.state(model)

    single = forward(state, wav, mask)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    shard = NamedSharding(mesh, P("data"))
    sharded = forward(state, jax.device_put(wav, shard), jax.device_put(mask, shard))
    # Codes, code counts and re-seeding decisions are identical; floats differ only by reduction order (the
    # sharded program sums partial results across devices), ~1e-5 after the encoder, aligner and decoder.
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "biu":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert np.asarray(single[1]).std() > 0  # the codes are not trivially constant


@pytest.mark.parametrize("mode", ["utterance", "frame"])
def test_acoustic_aligner_ignores_padded_frames(mode):
    config = cfg.ModelConfig(dimension=16, aligner_dim=32, acoustic_mode=mode)
    x = jax.random.normal(jax.random.key(0), (2, 12, 16))
    aligner = nnx.jit(lambda module, x, mask=None: module(x, mask))
    module = AcousticAligner(config, rngs=nnx.Rngs(0))
    alone = aligner(module, x[:, :9])
    padded = jnp.concatenate([x[:, :9], 100.0 * jnp.ones((2, 3, 16))], axis=1)
    mask = (jnp.arange(12) < 9)[None].repeat(2, 0)
    with_padding = aligner(module, padded, mask)
    if mode == "frame":
        with_padding = with_padding[:, :9]
        assert alone.shape == (2, 9, 192)
    else:
        assert alone.shape == (2, 192)
    np.testing.assert_allclose(np.asarray(alone), np.asarray(with_padding), rtol=1e-5, atol=1e-5)


def test_acoustic_aligner_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="aligner_dim"):
        AcousticAligner(cfg.ModelConfig(aligner_dim=20, aligner_heads=8), rngs=nnx.Rngs(0))


def test_gradients_reach_every_trainable_module():
    codec = Codec(TINY, rngs=nnx.Rngs(0))
    wav = 0.1 * jax.random.normal(jax.random.key(1), (2, 3200))

    def loss(model):
        out = model(wav)
        return (jnp.mean(jnp.abs(out.wav_bn - wav)) + out.quantizer.commitment_loss
                + jnp.mean(out.semantic_btd**2) + jnp.mean(out.acoustic**2))

    grads = nnx.jit(nnx.grad(loss))(codec)
    for part in ("encoder", "decoder", "semantic_head", "acoustic_aligner"):
        leaves = jax.tree.leaves(grads[part])
        assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
        assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0, part
    assert "quantizer" not in grads  # codebooks are EMA state, not parameters


def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32():
    f32 = Codec(TINY, rngs=nnx.Rngs(0))
    bf16_config = cfg.load("configs/tiny.yaml", ["model.compute_dtype=bfloat16"])
    bf16 = Codec(bf16_config, rngs=nnx.Rngs(0))
    wav = 0.1 * jax.random.normal(jax.random.key(1), (2, 3200))
    latents = nnx.jit(lambda model, w: (model._encode_latents(w), model.encoder.conv_in(w[..., None])))
    z32, _ = latents(f32, wav)
    z16, first16 = latents(bf16, wav)
    assert first16.dtype == jnp.float32  # a module called directly on float32 stays float32
    assert z16.dtype == jnp.float32  # the quantizer always sees float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    rel = float(jnp.linalg.norm(z16 - z32) / jnp.linalg.norm(z32))
    assert 0 < rel < 0.05, rel  # bf16 really ran (not bit-identical) and stays close
