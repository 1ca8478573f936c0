"""EnCodec's SLSTM: a stack of LSTM layers over time with a skip connection, channels-last [B, T, C].

Parameters use PyTorch's `nn.LSTM` names and gate order (input, forget, cell, output), transposed for
`x @ W`, so released EnCodec/SpeechTokenizer weights import with a transpose. The input projection of every
time step is one large matmul outside the scan; only the recurrent h @ W_hh stays inside `lax.scan`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcodec.models.conv import uniform_init


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
        weight_hh = self.weight_hh[...].astype(dtype)
        batch = x_btc.shape[0]

        def step(carry, gates_in_bg):
            h, c = carry
            gates = gates_in_bg + h @ weight_hh
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((batch, self.hidden), dtype)
        _, h_tbh = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(gates_in_btg, 0, 1), reverse=reverse)
        return jnp.swapaxes(h_tbh, 0, 1)


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
