"""Weight-normalised convolutions with EnCodec's padding rules, channels-last ([B, T, C] / [B, H, W, C]).

Weight norm (Salimans & Kingma 2016) reparameterises w = g · v / ‖v‖, the norm taken over every axis but one, as
`torch.nn.utils.weight_norm(module)` does with its default dim=0: for Conv1d/Conv2d that axis is the output
channel, for ConvTranspose1d (weight [in, out, k] in PyTorch) it is the *input* channel. We keep that quirk so
PyTorch EnCodec/SpeechTokenizer weights import exactly. Kernels are stored channels-last: [k, in, out] and
[kh, kw, in, out]. Initialisation follows PyTorch's default (U(±1/√fan_in) for weight and bias, g = ‖v‖), so an
untrained model has the same statistics as its PyTorch peer. `init="lecun"` is the alternative for short runs (see
`INITS`).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

_CONV1D_DIMS = ("NWC", "WIO", "NWC")
_CONV2D_DIMS = ("NHWC", "HWIO", "NHWC")

# Initial U(±bound) of (weight, bias) as functions of the fan-in.
# "pytorch": torch's default for conv layers (kaiming_uniform with a=√5, i.e. U(±1/√fan_in), for both), as EnCodec
#   and SpeechTokenizer train. Every conv then scales its input's variance by 1/3 and adds a bias of the same order,
#   so through SEANet's ~20 convs the untrained encoder's output is almost constant: on the bundled corpus the
#   latent varies by 0.002 over time around an offset of norm 0.33.
# "lecun": LeCun-uniform weights U(±√(3/fan_in)) (variance 1/fan_in, unit gain) and zero biases; the same
#   untrained encoder's latent varies by 0.19 around an offset of 0.19, so a short run starts from codes that
#   already depend on the audio.
INITS = {
    "pytorch": (lambda fan_in: 1.0 / math.sqrt(fan_in), lambda fan_in: 1.0 / math.sqrt(fan_in)),
    "lecun": (lambda fan_in: math.sqrt(3.0 / fan_in), lambda fan_in: 0.0),
}


def uniform_init(key: jax.Array, shape: tuple[int, ...], bound: float) -> jax.Array:
    """U(−bound, bound) of `shape`, drawn as a flat vector whose length is rounded up to a power of two.

    Built eagerly, JAX compiles the random generator once per distinct shape (~0.3 s each on a 2-core CPU, 15 s
    for the encoder's ~50 tensors); a handful of power-of-two lengths shared by every layer cuts that to a few
    compilations. Inside `jit` it is the same computation, so eager and jitted initialisation agree.
    """
    size = math.prod(shape)
    flat = jax.random.uniform(key, (1 << max(size - 1, 0).bit_length(),), jnp.float32)
    return _scale_to_shape(flat, jnp.float32(bound), shape)


@partial(jax.jit, static_argnums=2)
def _scale_to_shape(flat: jax.Array, bound: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return (flat[: math.prod(shape)].reshape(shape) * 2.0 - 1.0) * bound


class WeightNormKernel(nnx.Module):
    """A kernel that is either plain (`weight`) or weight-normalised (`weight_v`, `weight_g`)."""

    def __init__(self, shape: tuple[int, ...], fan_in: int, norm_axis: int, weight_norm: bool, rngs: nnx.Rngs,
                 init: str = "pytorch"):
        v = uniform_init(rngs.params(), shape, INITS[init][0](fan_in))
        self.norm_axis = norm_axis % len(shape)
        self.weight_norm = weight_norm
        if weight_norm:
            self.weight_v = nnx.Param(v)
            self.weight_g = nnx.Param(self._norm(v))
        else:
            self.weight = nnx.Param(v)

    def _norm(self, v: jax.Array) -> jax.Array:
        axes = tuple(a for a in range(v.ndim) if a != self.norm_axis)
        return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes))

    def __call__(self) -> jax.Array:
        if not self.weight_norm:
            return self.weight[...]
        v = self.weight_v[...]
        shape = [1] * v.ndim
        shape[self.norm_axis] = -1
        return v * (self.weight_g[...] / self._norm(v)).reshape(shape)


# Strided and transposed convolutions are computed as stride-1 convolutions over folded inputs ("polyphase").
# XLA's CPU backend runs an input-dilated convolution, which is what the gradient of a strided conv and the
# forward of a transposed conv are, on a generic slow path. Measured on the 2-core CPU, base widths, 4 × 1 s,
# before → after (scripts/bench_components.py, bench/NOTES.md): SEANet decoder forward + backward 1635 → 303 ms,
# the discriminators' 1295 → 950 ms. The folded forms below are the same sums in another order, and every
# gradient of a stride-1 convolution stays on the fast path.


def _fold_stride(x: jax.Array, kernel: jax.Array, axis: int, stride: int) -> tuple[jax.Array, jax.Array]:
    """A VALID convolution with `stride` along spatial `axis` → the same convolution with stride 1 there.

    Space-to-depth: consecutive groups of `stride` samples along the axis become channels (channel-major,
    c · stride + r, so feature groups stay contiguous), and the kernel's taps, zero-padded to a multiple of the
    stride, are folded the same way. x is [B, spatial..., C] (already padded), kernel [spatial..., C/G, O]."""
    k = kernel.shape[axis]
    taps = -(-k // stride)
    out_len = (x.shape[axis + 1] - k) // stride + 1
    need = (out_len + taps - 1) * stride
    have = x.shape[axis + 1]
    if have < need:  # the extra samples meet only the kernel's zero taps
        x = jnp.pad(x, [(0, need - have) if i == axis + 1 else (0, 0) for i in range(x.ndim)])
    else:
        x = jax.lax.slice_in_dim(x, 0, need, axis=axis + 1)
    x = x.reshape(x.shape[: axis + 1] + (need // stride, stride) + x.shape[axis + 2:])
    x = jnp.moveaxis(x, axis + 2, -1)
    x = x.reshape(x.shape[:-2] + (x.shape[-2] * stride,))
    kernel = jnp.pad(kernel, [(0, taps * stride - k) if i == axis else (0, 0) for i in range(kernel.ndim)])
    kernel = kernel.reshape(kernel.shape[:axis] + (taps, stride) + kernel.shape[axis + 1:])
    kernel = jnp.moveaxis(kernel, axis + 1, -2)
    kernel = kernel.reshape(kernel.shape[:-3] + (kernel.shape[-3] * stride, kernel.shape[-1]))
    return x, kernel


def strided_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...],
                 dilation: tuple[int, ...], dimension_numbers, groups: int = 1) -> jax.Array:
    """`lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation, ...)` (zero padding) with one
    strided, undilated axis folded to stride 1 (see `_fold_stride`); other cases go to XLA as they are. Only the
    folded axis is padded here: XLA's own padding of the other axes is faster than a separate pad."""
    strided = [i for i, s in enumerate(strides) if s > 1]
    if len(strided) == 1 and dilation[strided[0]] == 1:
        axis = strided[0]
        pad = [(0, 0)] * x.ndim
        pad[axis + 1] = padding[axis]
        x, kernel = _fold_stride(jnp.pad(x, pad), kernel, axis, strides[axis])
        strides = tuple(1 if i == axis else s for i, s in enumerate(strides))
        padding = tuple((0, 0) if i == axis else p for i, p in enumerate(padding))
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                        dimension_numbers=dimension_numbers, feature_group_count=groups)


def transposed_conv1d(x_btc: jax.Array, kernel_kio: jax.Array, stride: int) -> jax.Array:
    """PyTorch's ConvTranspose1d (no padding): [B, T, I] → [B, (T − 1) · stride + k, O], as `stride` phases.

    Output sample stride · q + r is Σ_a x[q − a] · W[a · stride + r]: one stride-1 convolution whose output
    channels are the (phase r, channel o) pairs, then depth-to-space. The convolution is XLA's, on an explicitly
    padded input (VALID): with jax 0.10 it beat one matmul per tap in the whole step (base decoder, 16 × 1 s:
    2.32 → 2.19 s, temporaries 1844 → 1701 MB; bench/NOTES.md), while the same convolution with XLA's own padding
    took 10.6 s."""
    k, _, out_channels = kernel_kio.shape
    taps = -(-k // stride)
    kernel = jnp.pad(kernel_kio, ((0, taps * stride - k), (0, 0), (0, 0)))
    kernel = kernel.reshape(taps, stride, *kernel.shape[1:])  # [a, r, I, O]
    kernel = jnp.moveaxis(kernel, 1, 2).reshape(taps, kernel.shape[2], stride * out_channels)  # [a, I, r·O]
    length = (x_btc.shape[1] - 1) * stride + k
    y = jax.lax.conv_general_dilated(jnp.pad(x_btc, ((0, 0), (taps - 1, taps - 1), (0, 0))), kernel[::-1], (1,),
                                     ((0, 0),), dimension_numbers=_CONV1D_DIMS)
    batch, frames = y.shape[:2]
    return y.reshape(batch, frames * stride, out_channels)[:, :length]


def pad1d(x_btc: jax.Array, left: int, right: int, mode: str) -> jax.Array:
    """Pads the time axis; 'reflect' on a signal shorter than the pad first zero-extends it, as EnCodec's pad1d."""
    if left == 0 and right == 0:
        return x_btc
    if mode in ("zero", "constant"):
        return jnp.pad(x_btc, ((0, 0), (left, right), (0, 0)))
    length = x_btc.shape[1]
    extra = 0
    if mode == "reflect" and length <= max(left, right):
        extra = max(left, right) - length + 1
        x_btc = jnp.pad(x_btc, ((0, 0), (0, extra), (0, 0)))
    jnp_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    padded = jnp.pad(x_btc, ((0, 0), (left, right), (0, 0)), mode=jnp_mode)
    return padded[:, : padded.shape[1] - extra]


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last window complete, so no sample is dropped (EnCodec)."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


class Conv1d(nnx.Module):
    """EnCodec's SConv1d: pads so the output has ceil(T / stride) frames, causally or centred."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, groups: int = 1, causal: bool = False, pad_mode: str = "reflect",
                 weight_norm: bool = True, padding: str = "same_encodec", init: str = "pytorch", rngs: nnx.Rngs):
        fan_in = in_channels // groups * kernel_size
        self.kernel = WeightNormKernel((kernel_size, in_channels // groups, out_channels), fan_in, -1,
                                       weight_norm, rngs, init)
        self.bias = nnx.Param(uniform_init(rngs.params(), (out_channels,), INITS[init][1](fan_in)))
        self.kernel_size, self.stride, self.dilation, self.groups = kernel_size, stride, dilation, groups
        self.causal, self.pad_mode, self.padding = causal, pad_mode, padding

    def __call__(self, x_btc: jax.Array) -> jax.Array:
        if self.padding == "same_encodec":
            k_eff = (self.kernel_size - 1) * self.dilation + 1
            padding_total = k_eff - self.stride
            extra = extra_padding_for_conv1d(x_btc.shape[1], k_eff, self.stride, padding_total)
            if self.causal:
                left, right = padding_total, extra
            else:
                right = padding_total // 2
                left, right = padding_total - right, right + extra
            x_btc = pad1d(x_btc, left, right, self.pad_mode)
        else:  # "symmetric": plain PyTorch-style zero padding of (k_eff - 1) // 2 per side (HiFi-GAN)
            half = ((self.kernel_size - 1) * self.dilation) // 2
            x_btc = jnp.pad(x_btc, ((0, 0), (half, half), (0, 0)))
        kernel = self.kernel().astype(x_btc.dtype)
        y = strided_conv(x_btc, kernel, (self.stride,), ((0, 0),), (self.dilation,), _CONV1D_DIMS, self.groups)
        return y + self.bias[...].astype(y.dtype)


class ConvTranspose1d(nnx.Module):
    """EnCodec's SConvTranspose1d: upsamples T → T·stride and trims the kernel overhang (right-only if causal)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 causal: bool = False, trim_right_ratio: float = 1.0, weight_norm: bool = True,
                 init: str = "pytorch", rngs: nnx.Rngs):
        # PyTorch computes the fan-in of a transposed conv from weight.size(1) * k = out_channels * k; the inputs
        # that actually reach one output sample are in_channels * k / stride, which "lecun" uses.
        fan_in = out_channels * kernel_size if init == "pytorch" else max(in_channels * kernel_size // stride, 1)
        # Norm over all axes but the input channel: PyTorch weight_norm(dim=0) on a [in, out, k] weight.
        self.kernel = WeightNormKernel((kernel_size, in_channels, out_channels), fan_in, 1, weight_norm, rngs, init)
        self.bias = nnx.Param(uniform_init(rngs.params(), (out_channels,), INITS[init][1](fan_in)))
        self.kernel_size, self.stride = kernel_size, stride
        self.causal, self.trim_right_ratio = causal, trim_right_ratio

    def __call__(self, x_btc: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        y = transposed_conv1d(x_btc, self.kernel().astype(x_btc.dtype), s)
        y = y + self.bias[...].astype(y.dtype)
        padding_total = k - s
        if self.causal:
            right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            right = padding_total // 2
        left = padding_total - right
        return y[:, left : y.shape[1] - right]


class Conv2d(nnx.Module):
    """A 2-D convolution with explicit (zero) padding, optionally weight-normalised (discriminators)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], *,
                 stride: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1),
                 padding: tuple[int, int] = (0, 0), weight_norm: bool = True, init: str = "pytorch", rngs: nnx.Rngs):
        fan_in = in_channels * kernel_size[0] * kernel_size[1]
        self.kernel = WeightNormKernel((*kernel_size, in_channels, out_channels), fan_in, -1, weight_norm, rngs,
                                       init)
        self.bias = nnx.Param(uniform_init(rngs.params(), (out_channels,), INITS[init][1](fan_in)))
        self.stride, self.dilation, self.padding = tuple(stride), tuple(dilation), tuple(padding)

    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        y = strided_conv(x_bhwc, self.kernel().astype(x_bhwc.dtype), self.stride,
                         tuple((p, p) for p in self.padding), self.dilation, _CONV2D_DIMS)
        return y + self.bias[...].astype(y.dtype)
