"""Discriminators against PyTorch mirrors of their references, written with torch.nn only in
scripts/torch_peers/discriminators.py (the benchmark's PyTorch side uses the same mirrors): EnCodec's DiscriminatorSTFT
(facebookresearch/encodec, encodec/msstftd.py) and HiFi-GAN's DiscriminatorP / DiscriminatorS /
MultiScaleDiscriminator pooling (jik876/hifi-gan, models.py).

torchaudio has no build for this torch, so the mirror computes EnCodec's `torchaudio.transforms.Spectrogram(
normalized=True, center=False, power=None)` as `torch.stft(normalized=False)` divided by sqrt(sum(window²)), which
is what torchaudio's `spectrogram(normalized=True)` does. Parity tests fill our parameters with random numbers
(weight-norm g away from ‖v‖, so the reparameterisation itself is exercised), copy them into the mirror, and
compare every logit and feature map.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from jaxcodec.config import DiscriminatorConfig
from jaxcodec.models.conv import Conv1d, Conv2d
from jaxcodec.models.discriminators import KINDS, Discriminators
from scripts.torch_peers.discriminators import (
    TorchDiscriminatorP,
    TorchDiscriminatorS,
    TorchDiscriminatorSTFT,
    _torch_msd,
)

torch.set_num_threads(2)


# ------------------------------------------------------------------------------------------------------ helpers


def _subs(model: Discriminators) -> list[nnx.Module]:
    return [*model.msstft, *model.mpd, *model.msd]


def _n_params(module) -> int:
    if isinstance(module, nn.Module):
        return sum(p.numel() for p in module.parameters())
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _abstract(config: DiscriminatorConfig, dtype=None) -> Discriminators:
    return nnx.eval_shape(lambda: Discriminators(config, dtype=dtype, rngs=nnx.Rngs(0)))


def _randomize(model: nnx.Module, seed: int) -> nnx.Module:
    """Fills every conv with He-scaled random numbers (g = ‖v‖ · U(0.5, 1.5)), deterministically by graph order."""
    rng = np.random.default_rng(seed)
    for _, node in nnx.iter_graph(model):
        if not isinstance(node, (Conv1d, Conv2d)):
            continue
        kernel = node.kernel
        shape = (kernel.weight_v if kernel.weight_norm else kernel.weight).shape
        v = rng.standard_normal(shape) * math.sqrt(2.0 / math.prod(shape[:-1]))  # channels-last: fan_in = all but out
        if kernel.weight_norm:
            norm = np.sqrt(np.sum(v**2, axis=tuple(range(v.ndim - 1))))
            kernel.weight_v.set_value(jnp.asarray(v, jnp.float32))
            kernel.weight_g.set_value(jnp.asarray(norm * rng.uniform(0.5, 1.5, norm.shape), jnp.float32))
        else:
            kernel.weight.set_value(jnp.asarray(v, jnp.float32))
        node.bias.set_value(jnp.asarray(rng.uniform(-0.05, 0.05, shape[-1]), jnp.float32))
    return model


def _copy_conv(ours: Conv1d | Conv2d, theirs: nn.Module) -> None:
    """Ours [k, in/groups, out] / [kh, kw, in, out] → torch [out, in/groups, k] / [out, in, kh, kw]."""
    kernel = ours.kernel
    assert torch.nn.utils.parametrize.is_parametrized(theirs) == kernel.weight_norm
    if kernel.weight_norm:
        v = np.asarray(kernel.weight_v.get_value())
    else:
        v = np.asarray(kernel.weight.get_value())
    perm = (3, 2, 0, 1) if v.ndim == 4 else (2, 1, 0)
    v = torch.from_numpy(np.ascontiguousarray(v.transpose(perm)))
    with torch.no_grad():
        if kernel.weight_norm:
            g = np.array(kernel.weight_g.get_value()).reshape((-1,) + (1,) * (v.ndim - 1))
            theirs.parametrizations.weight.original0.copy_(torch.from_numpy(g))
            theirs.parametrizations.weight.original1.copy_(v)
        else:
            theirs.weight.copy_(v)
        theirs.bias.copy_(torch.from_numpy(np.array(ours.bias.get_value())))


def _copy_disc(ours: nnx.Module, theirs: nn.Module) -> None:
    assert len(ours.convs) == len(theirs.convs)
    for ours_conv, theirs_conv in zip([*ours.convs, ours.conv_post], [*theirs.convs, theirs.conv_post], strict=True):
        _copy_conv(ours_conv, theirs_conv)


def _channels_last(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.ndim == 4:
        t = t.permute(0, 2, 3, 1)
    elif t.ndim == 3:
        t = t.permute(0, 2, 1)
    return t.numpy()


def _assert_close(ours, theirs: np.ndarray, what: str, rel: float = 1e-4) -> None:
    ours = np.asarray(ours, np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs reference {theirs.shape}"
    scale = float(np.max(np.abs(theirs)))
    assert scale > 1e-3, f"{what}: degenerate reference (max |x| = {scale})"
    err = float(np.max(np.abs(ours - theirs)))
    assert err <= rel * scale, f"{what}: max error {err:.3g} vs max |reference| {scale:.3g}"


def _conv_len(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """torch.nn.Conv1d's documented output length (also AvgPool1d's, dilation 1)."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# -------------------------------------------------------------------------------------------------------- tests


def test_shapes_and_counts_on_half_a_second():
    config = DiscriminatorConfig(kinds=KINDS)
    model = _abstract(config)
    batch, n = 2, 8000  # 0.5 s at 16 kHz
    logits, fmaps = nnx.eval_shape(lambda m, w: m(w), model, jax.ShapeDtypeStruct((batch, n), jnp.float32))
    names = [f"msstft_{k}" for k in config.msstft_n_ffts] + [f"mpd_{p}" for p in config.mpd_periods] + [
        f"msd_{i}" for i in range(config.msd_scales)]
    assert list(model.names) == names
    assert len(logits) == len(fmaps) == len(names) == 13

    expected = {}
    for n_fft in config.msstft_n_ffts:  # frames = 1 + (N - n_fft) // hop (center=False); freq halved 3 times
        frames, freq = 1 + (n - n_fft) // (n_fft // 4), n_fft // 2 + 1
        maps = [(batch, frames, freq, 32)]
        for _ in range(3):
            freq = _conv_len(freq, 9, 2, 4)
            maps.append((batch, frames, freq, 32))
        maps.append((batch, frames, freq, 32))
        expected[f"msstft_{n_fft}"] = ((batch, frames, freq, 1), maps)
    for p in config.mpd_periods:
        h, maps = -(-n // p), []
        for channels in (32, 128, 512, 1024):
            h = _conv_len(h, 5, 3, 2)
            maps.append((batch, h, p, channels))
        maps += [(batch, h, p, 1024), (batch, h, p, 1)]
        expected[f"mpd_{p}"] = ((batch, h * p), maps)
    length = n
    hifigan_msd = ((128, 15, 1), (128, 41, 2), (256, 41, 2), (512, 41, 4), (1024, 41, 4), (1024, 41, 1),
                   (1024, 5, 1), (1, 3, 1))  # (out channels, kernel, stride), padding (kernel - 1) // 2
    for i in range(config.msd_scales):
        if i:
            length = _conv_len(length, 4, 2, 2)
        t, maps = length, []
        for channels, k, s in hifigan_msd:
            t = _conv_len(t, k, s, (k - 1) // 2)
            maps.append((batch, t, channels))
        expected[f"msd_{i}"] = ((batch, t), maps)
    assert expected["msstft_2048"][0] == (2, 12, 129, 1) and expected["msd_1"][1][0] == (2, 4001, 128)

    for name, logit, fmap in zip(names, logits, fmaps, strict=True):
        want_logit, want_maps = expected[name]
        assert logit.shape == want_logit, name
        assert [f.shape for f in fmap] == want_maps, name


def test_parameter_counts_match_pytorch_references():
    config = DiscriminatorConfig(kinds=KINDS)
    model = _abstract(config)
    reference = {
        "msstft": _n_params(TorchDiscriminatorSTFT(config.msstft_filters, 1024, config.msstft_max_filters)),
        "mpd": _n_params(TorchDiscriminatorP(2)),
        "msd": _n_params(TorchDiscriminatorS()),
    }
    for name, sub in zip(model.names, _subs(model), strict=True):
        assert _n_params(sub) == reference[name.split("_")[0]], name
    totals = {kind: _n_params(getattr(model, kind)) for kind in KINDS}
    assert totals == {"msstft": 5 * reference["msstft"], "mpd": 5 * reference["mpd"], "msd": 3 * reference["msd"]}
    # EnCodec's quirk: the first STFT conv is not weight-normalised (a plain weight, no g), the rest are.
    first, *rest = model.msstft[0].convs
    assert not first.kernel.weight_norm and all(c.kernel.weight_norm for c in rest)


def test_every_output_matches_pytorch_references():
    # kinds in a shuffled order: the output order is fixed (msstft, mpd, msd) whatever the config says.
    config = DiscriminatorConfig(kinds=("msd", "mpd", "msstft"), msstft_n_ffts=(256, 128), mpd_periods=(3,),
                                 msd_scales=2)
    model = _randomize(_abstract(config), seed=1)
    assert model.names == ("msstft_256", "msstft_128", "mpd_3", "msd_0", "msd_1")
    torch_stft = [TorchDiscriminatorSTFT(config.msstft_filters, n_fft) for n_fft in config.msstft_n_ffts]
    torch_mpd = [TorchDiscriminatorP(p) for p in config.mpd_periods]
    torch_msd = [TorchDiscriminatorS() for _ in range(config.msd_scales)]
    for ours, theirs in zip(_subs(model), [*torch_stft, *torch_mpd, *torch_msd], strict=True):
        _copy_disc(ours, theirs)

    # 1000 samples: not a multiple of the period 3, so the reflect padding is exercised.
    wav = (0.3 * np.random.default_rng(2).standard_normal((2, 1000))).astype(np.float32)
    logits, fmaps = nnx.jit(lambda m, w: m(w))(model, jnp.asarray(wav))
    x = torch.from_numpy(wav)[:, None, :]
    with torch.no_grad():
        reference = [d(x) for d in [*torch_stft, *torch_mpd]] + _torch_msd(torch_msd, x)
    for name, logit, fmap, (ref_logit, ref_fmap) in zip(model.names, logits, fmaps, reference, strict=True):
        _assert_close(logit, _channels_last(ref_logit), f"{name} logits")
        assert len(fmap) == len(ref_fmap), name
        for j, (f, ref_f) in enumerate(zip(fmap, ref_fmap, strict=True)):
            _assert_close(f, _channels_last(ref_f), f"{name} fmap {j}")


def test_jit_grad_is_finite_and_reaches_every_parameter():
    config = DiscriminatorConfig(kinds=KINDS, msstft_n_ffts=(128,), msstft_filters=8, mpd_periods=(2,),
                                 msd_scales=2)
    # Random weights filled in from numpy: compiling the real initialiser would double this test's time, and the
    # abstract model runs the same constructor.
    model = _randomize(_abstract(config), seed=4)
    wav = jnp.asarray(0.3 * np.random.default_rng(1).standard_normal((1, 400)), jnp.float32)

    @nnx.jit
    def grads(model, wav):
        def loss_fn(model, wav):
            logits, fmaps = model(wav)
            adversarial = sum(jnp.mean((1.0 - logit) ** 2) for logit in logits)
            feature = sum(jnp.mean(jnp.abs(f)) for fmap in fmaps for f in fmap)
            return adversarial + feature

        return nnx.grad(loss_fn, argnums=(0, 1))(model, wav)

    param_grads, wav_grad = grads(model, wav)
    wav_grad = np.asarray(wav_grad)  # checks in numpy: eager jnp ops would compile once per leaf shape
    assert np.all(np.isfinite(wav_grad)) and np.max(np.abs(wav_grad)) > 0
    leaves = jax.tree_util.tree_leaves_with_path(param_grads)
    assert len(leaves) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    for path, g in leaves:
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert np.max(np.abs(g)) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_bfloat16_compute_keeps_float32_params():
    config = DiscriminatorConfig(kinds=("msstft", "mpd"), msstft_n_ffts=(128,), mpd_periods=(2,))
    model32 = _randomize(_abstract(config), seed=3)
    model16 = _randomize(_abstract(config, dtype="bfloat16"), seed=3)
    wav = jnp.asarray(0.3 * np.random.default_rng(2).standard_normal((1, 800)), jnp.float32)
    forward = nnx.jit(lambda m, w: m(w))
    logits32, _ = forward(model32, wav)
    logits16, fmaps16 = forward(model16, wav)
    assert all(x.dtype == jnp.bfloat16 for x in [*logits16, *[f for fm in fmaps16 for f in fm]])
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model16, nnx.Param)))
    for lo, hi in zip(logits16, logits32, strict=True):  # same model at bfloat16: close, not equal
        _assert_close(np.asarray(lo, np.float64), np.asarray(hi, np.float64), "bfloat16 logits", rel=5e-2)


def test_bad_configs_and_inputs_raise_actionable_errors():
    with pytest.raises(ValueError, match="disc.kinds"):
        Discriminators(DiscriminatorConfig(kinds=("msstft", "mbd")), rngs=nnx.Rngs(0))
    model = _abstract(DiscriminatorConfig(msstft_n_ffts=(2048,)))
    with pytest.raises(ValueError, match="n_fft=2048"):
        nnx.eval_shape(lambda m, w: m(w), model, jax.ShapeDtypeStruct((1, 1000), jnp.float32))
