"""Weight-normed convolutions (EnCodec padding) and the SLSTM against PyTorch layers with the same weights."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from jaxcodec.models.conv import Conv1d, Conv2d, ConvTranspose1d
from jaxcodec.models.lstm import SLSTM


def encodec_sconv1d(x_bct, weight_oik, bias, stride, dilation, causal, pad_mode):
    """EnCodec's SConv1d forward (encodec/modules/conv.py), written with torch ops."""
    k = (weight_oik.shape[-1] - 1) * dilation + 1
    padding_total = k - stride
    length = x_bct.shape[-1]
    n_frames = (length - k + padding_total) / stride + 1
    extra = (math.ceil(n_frames) - 1) * stride + (k - padding_total) - length
    if causal:
        left, right = padding_total, extra
    else:
        right = padding_total // 2
        left, right = padding_total - right, right + extra
    x = F.pad(x_bct, (left, right), mode=pad_mode)
    return F.conv1d(x, weight_oik, bias, stride=stride, dilation=dilation)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kernel,stride,dilation,length", [(7, 1, 1, 50), (3, 1, 4, 33), (8, 4, 1, 41), (4, 2, 1, 9)])
def test_conv1d_matches_encodec_sconv1d(causal, kernel, stride, dilation, length):
    conv = Conv1d(3, 5, kernel, stride=stride, dilation=dilation, causal=causal, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(2, length, 3)).astype(np.float32)
    ours = np.asarray(conv(jnp.asarray(x)))
    # PyTorch's weight_norm builds w = g v / ||v|| from the same (g, v): an independent weight-norm reference.
    ref_conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(3, 5, kernel, stride=stride, dilation=dilation))
    ref_conv.weight_v.data = torch.tensor(np.asarray(conv.kernel.weight_v[...]).transpose(2, 1, 0))
    ref_conv.weight_g.data = torch.tensor(np.asarray(conv.kernel.weight_g[...]).reshape(5, 1, 1))
    ref_conv.bias.data = torch.tensor(np.asarray(conv.bias[...]))
    ref_conv(torch.zeros(1, 3, 64))  # the weight_norm pre-hook computes .weight
    ref = encodec_sconv1d(torch.tensor(x).transpose(1, 2), ref_conv.weight, ref_conv.bias, stride, dilation,
                          causal, "reflect").transpose(1, 2).detach().numpy()
    assert ours.shape == ref.shape == (2, math.ceil(length / stride), 5)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_reflect_padding_of_a_signal_shorter_than_the_pad():
    conv = Conv1d(1, 2, 7, rngs=nnx.Rngs(1), weight_norm=False)
    x = np.random.default_rng(1).normal(size=(1, 2, 1)).astype(np.float32)
    ours = np.asarray(conv(jnp.asarray(x)))
    w = torch.tensor(np.asarray(conv.kernel.weight[...]).transpose(2, 1, 0))
    xt = torch.tensor(x).transpose(1, 2)
    # EnCodec's pad1d: zero-extend first so reflect padding is defined, then drop the extension.
    xt = F.pad(xt, (0, 2))
    padded = F.pad(xt, (3, 3), mode="reflect")[..., :-2]
    ref = F.conv1d(padded, w, torch.tensor(np.asarray(conv.bias[...]))).transpose(1, 2).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ratio,kernel", [(2, 4), (5, 10), (8, 16), (2, 5), (3, 4)])
def test_conv_transpose1d_matches_torch(causal, ratio, kernel):
    """SEANet's kernel 2 · stride, and kernels that are not a multiple of the stride (the phase form pads them)."""
    conv = ConvTranspose1d(6, 4, kernel, stride=ratio, causal=causal, rngs=nnx.Rngs(2))
    x = np.random.default_rng(2).normal(size=(2, 7, 6)).astype(np.float32)
    ours = np.asarray(conv(jnp.asarray(x)))
    ref_conv = torch.nn.utils.weight_norm(torch.nn.ConvTranspose1d(6, 4, kernel, stride=ratio))
    ref_conv.weight_v.data = torch.tensor(np.asarray(conv.kernel.weight_v[...]).transpose(1, 2, 0))  # [in,out,k]
    ref_conv.weight_g.data = torch.tensor(np.asarray(conv.kernel.weight_g[...]).reshape(6, 1, 1))
    ref_conv.bias.data = torch.tensor(np.asarray(conv.bias[...]))
    y = ref_conv(torch.tensor(x).transpose(1, 2)).detach()
    total = kernel - ratio
    right = total if causal else total // 2
    ref = y[..., total - right: y.shape[-1] - right].transpose(1, 2).numpy()
    assert ours.shape == (2, 7 * ratio, 4)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_conv2d_matches_torch():
    conv = Conv2d(2, 3, (3, 9), stride=(1, 2), dilation=(2, 1), padding=(2, 4), rngs=nnx.Rngs(3))
    x = np.random.default_rng(3).normal(size=(2, 10, 33, 2)).astype(np.float32)
    ours = np.asarray(conv(jnp.asarray(x)))
    w = torch.tensor(np.asarray(conv.kernel())).permute(3, 2, 0, 1)
    ref = F.conv2d(torch.tensor(x).permute(0, 3, 1, 2), w, torch.tensor(np.asarray(conv.bias[...])),
                   stride=(1, 2), dilation=(2, 1), padding=(2, 4)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_slstm_matches_torch_lstm_with_skip(bidirectional):
    lstm = SLSTM(6, 2, bidirectional=bidirectional, rngs=nnx.Rngs(4))
    ref = torch.nn.LSTM(6, 6, 2, bidirectional=bidirectional)
    state = {}
    for layer in range(2):
        directions = [("", lstm.forward_layers[layer])]
        if bidirectional:
            directions.append(("_reverse", lstm.backward_layers[layer]))
        for suffix, cell in directions:
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                value = np.asarray(getattr(cell, name)[...])
                state[f"{name}_l{layer}{suffix}"] = torch.tensor(value.T if value.ndim == 2 else value)
    ref.load_state_dict(state)
    x = np.random.default_rng(4).normal(size=(3, 17, 6)).astype(np.float32)
    ours = np.asarray(lstm(jnp.asarray(x)))
    y, _ = ref(torch.tensor(x).transpose(0, 1))
    skip = np.concatenate([x, x], -1) if bidirectional else x
    np.testing.assert_allclose(ours, y.transpose(0, 1).detach().numpy() + skip, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv1d", "transposed", "conv2d"])
def test_lecun_init_has_unit_gain_and_zero_bias(kind):
    """init="lecun": weights U(±√(3/fan_in)) with fan_in = the inputs one output sample sees, zero biases; an
    untrained layer then keeps the variance of white noise (PyTorch's default divides it by 3)."""
    c_in, c_out, k, stride = 64, 32, 8, 4
    rng = np.random.default_rng(0)
    if kind == "conv2d":
        conv = Conv2d(c_in, c_out, (3, 9), padding=(1, 4), init="lecun", rngs=nnx.Rngs(0))
        fan_in = c_in * 27
        x = rng.normal(size=(2, 64, 64, c_in)).astype(np.float32)
    else:
        if kind == "transposed":
            conv = ConvTranspose1d(c_in, c_out, k, stride=stride, init="lecun", rngs=nnx.Rngs(0))
            fan_in = c_in * k // stride
        else:
            conv = Conv1d(c_in, c_out, k, stride=stride, init="lecun", rngs=nnx.Rngs(0))
            fan_in = c_in * k
        x = rng.normal(size=(4, 4096, c_in)).astype(np.float32)
    w = np.asarray(conv.kernel())
    bound = math.sqrt(3.0 / fan_in)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert not np.asarray(conv.bias[...]).any()
    y = np.asarray(conv(jnp.asarray(x)))
    trim = 2 * k  # away from the padded edges
    interior = y[:, trim:-trim, trim:-trim] if kind == "conv2d" else y[:, trim:-trim]
    assert abs(interior.var() - 1.0) < 0.1
    if kind == "conv1d":  # PyTorch's default U(±1/√fan_in): a third of the variance per channel (about its bias)
        y0 = np.asarray(Conv1d(c_in, c_out, k, stride=stride, rngs=nnx.Rngs(0))(jnp.asarray(x)))[:, trim:-trim]
        assert abs(y0.var(axis=(0, 1)).mean() - 1 / 3) < 0.05


def test_conv_init_reaches_every_codec_and_discriminator_conv():
    """`model.conv_init` / `disc.conv_init` are wired through SEANet and all three discriminator families: under
    "lecun" every conv bias starts at zero (the LSTM and the teacher heads keep their own initialisers)."""
    from jaxcodec import config as cfg
    from jaxcodec.models.codec import Codec
    from jaxcodec.models.discriminators import Discriminators

    config = cfg.load("configs/tiny.yaml", ["model.conv_init=lecun"])
    codec = Codec(config, rngs=nnx.Rngs(0))
    disc_config = cfg.DiscriminatorConfig(kinds=("msstft", "mpd", "msd"), msstft_filters=4, msstft_n_ffts=(128,),
                                          mpd_periods=(2,), msd_scales=1, conv_init="lecun")
    disc = Discriminators(disc_config, rngs=nnx.Rngs(0))
    convs = [m for part in (codec.encoder, codec.decoder, disc) for _, m in nnx.iter_graph(part)
             if isinstance(m, (Conv1d, ConvTranspose1d, Conv2d))]
    assert len(convs) > 30
    assert all(not np.asarray(conv.bias[...]).any() for conv in convs)
    pytorch = Codec(cfg.load("configs/tiny.yaml", ["model.conv_init=pytorch"]), rngs=nnx.Rngs(0))
    assert np.asarray(pytorch.encoder.conv_in.bias[...]).any()


def test_lstm_recurrence_gradient_equals_autodiff_of_the_plain_scan():
    """`recurrence` has a hand-written backward pass; it must equal jax.grad of the textbook scan."""
    import jax

    from jaxcodec.models.lstm import recurrence

    rng = np.random.default_rng(0)
    t, b, h = 7, 3, 5
    gates_in = jnp.asarray(rng.normal(size=(t, b, 4 * h)).astype(np.float32))
    weight_hh = jnp.asarray(0.5 * rng.normal(size=(h, 4 * h)).astype(np.float32))
    target = jnp.asarray(rng.normal(size=(t, b, h)).astype(np.float32))

    def plain(gates_in, weight_hh):
        def step(carry, g):
            hh, c = carry
            i, f, gg, o = jnp.split(g + hh @ weight_hh, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            hh = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (hh, c), hh

        zeros = jnp.zeros((b, h))
        return jax.lax.scan(step, (zeros, zeros), gates_in)[1]

    loss = lambda fn: lambda g, w: jnp.sum((fn(g, w) - target) ** 2)  # noqa: E731
    np.testing.assert_allclose(np.asarray(recurrence(gates_in, weight_hh)), np.asarray(plain(gates_in, weight_hh)),
                               rtol=1e-6, atol=1e-6)
    ours = jax.grad(loss(recurrence), argnums=(0, 1))(gates_in, weight_hh)
    expected = jax.grad(loss(plain), argnums=(0, 1))(gates_in, weight_hh)
    for a, e in zip(ours, expected, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-6)
