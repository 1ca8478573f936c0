"""EnCodec's SLSTM: a stack of LSTM layers over time with a skip connection, channels-last [B, T, C].

Parameters use PyTorch's `nn.LSTM` names and gate order (input, forget, cell, output), transposed for
`x @ W`, so released EnCodec/SpeechTokenizer weights import with a transpose. The input projection of every
time step is one large matmul outside the scan; only the recurrent h @ W_hh stays inside `lax.scan`, and the
recurrence has a hand-written gradient (`recurrence`) whose weight gradient is one matmul after the loop.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcodec.models.conv import uniform_init


def _cell(gates_bg: jax.Array, c_bh: jax.Array):
    i, f, g, o = jnp.split(gates_bg, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c_bh + i * g
    return (i, f, g, o), c, o * jnp.tanh(c)


def _recurrence_forward(gates_in_tbg: jax.Array, weight_hh: jax.Array):
    """h_t for t = 0..T-1 from zero initial state; also what the backward pass needs."""
    batch, hidden = gates_in_tbg.shape[1], weight_hh.shape[0]
    zeros = jnp.zeros((batch, hidden), gates_in_tbg.dtype)

    def step(carry, gates_in_bg):
        h, c = carry
        activations, c_new, h_new = _cell(gates_in_bg + h @ weight_hh, c)
        return (h_new, c_new), (h_new, c, c_new, activations)

    _, (h_tbh, c_prev_tbh, c_tbh, activations) = jax.lax.scan(step, (zeros, zeros), gates_in_tbg)
    return h_tbh, (h_tbh, c_prev_tbh, c_tbh, activations, weight_hh)


@jax.custom_vjp
def recurrence(gates_in_tbg: jax.Array, weight_hh: jax.Array) -> jax.Array:
    """The LSTM's recurrent part: input-projected gates [T, B, 4H] → hidden states [T, B, H].

    Its gradient is written by hand (`_recurrence_backward`): autodiff of the scan accumulates ∂L/∂W_hh inside
    the reverse loop, one [H, 4H] read-modify-write per time step; here the loop only carries ∂L/∂h and ∂L/∂c
    and returns each step's gate gradients, and ∂L/∂W_hh is one matmul over all steps afterwards."""
    return _recurrence_forward(gates_in_tbg, weight_hh)[0]


def _recurrence_backward(residuals, dh_tbh):
    h_tbh, c_prev_tbh, c_tbh, (i, f, g, o), weight_hh = residuals
    zeros = jnp.zeros_like(h_tbh[0])

    def step(carry, per_step):
        dh_next, dc_next = carry
        dh_out, c_prev, c, i, f, g, o = per_step
        dh = dh_out + dh_next
        tanh_c = jnp.tanh(c)
        dc = dc_next + dh * o * (1 - tanh_c**2)
        dgates = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g**2),
                                  dh * tanh_c * o * (1 - o)], axis=-1)
        return (dgates @ weight_hh.T, dc * f), dgates

    _, dgates_tbg = jax.lax.scan(step, (zeros, zeros), (dh_tbh, c_prev_tbh, c_tbh, i, f, g, o), reverse=True)
    h_prev_tbh = jnp.concatenate([zeros[None], h_tbh[:-1]], axis=0)
    d_weight_hh = jnp.einsum("tbh,tbg->hg", h_prev_tbh, dgates_tbg)
    return dgates_tbg, d_weight_hh.astype(weight_hh.dtype)


recurrence.defvjp(_recurrence_forward, _recurrence_backward)


class LSTMLayer(nnx.Module):
    """One direction of one layer: `weight_ih` [in, 4H], `weight_hh` [H, 4H], `bias_ih`, `bias_hh` [4H]."""

    def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(hidden)  # PyTorch's nn.LSTM initialisation: U(±1/√H) for every tensor.

        def uniform(shape):
            return nnx.Param(uniform_init(rngs.params(), shape, bound))

        self.weight_ih = uniform((in_features, 4 * hidden))
        self.weight_hh = uniform((hidden, 4 * hidden))
        self.bias_ih = uniform((4 * hidden,))
        self.bias_hh = uniform((4 * hidden,))
        self.hidden = hidden

    def __call__(self, x_btc: jax.Array, reverse: bool = False) -> jax.Array:
        dtype = x_btc.dtype
        gates_in_btg = x_btc @ self.weight_ih[...].astype(dtype) + (self.bias_ih[...] + self.bias_hh[...]).astype(dtype)
        gates_in_tbg = jnp.swapaxes(gates_in_btg, 0, 1)
        if reverse:  # the backward direction is the forward recurrence over reversed time
            gates_in_tbg = gates_in_tbg[::-1]
        h_tbh = recurrence(gates_in_tbg, self.weight_hh[...].astype(dtype))
        return jnp.swapaxes(h_tbh[::-1] if reverse else h_tbh, 0, 1)


class SLSTM(nnx.Module):
    """`num_layers` LSTM layers, optionally bidirectional, plus the input (EnCodec's skip=True).

    Bidirectional layers concatenate [forward, backward] features, as `nn.LSTM(bidirectional=True)`, and the skip
    adds the input repeated twice along channels, as SpeechTokenizer's SLSTM does.
    """

    def __init__(self, dim: int, num_layers: int = 2, *, bidirectional: bool = False, skip: bool = True,
                 rngs: nnx.Rngs):
        directions = 2 if bidirectional else 1
        self.forward_layers = nnx.List(
            [LSTMLayer(dim if i == 0 else dim * directions, dim, rngs=rngs) for i in range(num_layers)])
        self.backward_layers = nnx.List(
            [LSTMLayer(dim if i == 0 else dim * directions, dim, rngs=rngs) for i in range(num_layers)]
            if bidirectional else [])
        self.bidirectional, self.skip = bidirectional, skip

    def __call__(self, x_btc: jax.Array) -> jax.Array:
        y = x_btc
        for i, forward in enumerate(self.forward_layers):
            if self.bidirectional:
                y = jnp.concatenate([forward(y), self.backward_layers[i](y, reverse=True)], axis=-1)
            else:
                y = forward(y)
        if self.skip:
            y = y + (jnp.concatenate([x_btc, x_btc], axis=-1) if self.bidirectional else x_btc)
        return y
