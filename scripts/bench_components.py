"""Benchmark (not a test): forward and forward+backward time of the codec's parts (SEANet encoder, decoder, their
LSTMs, the discriminators) under `jax.jit`, to locate where a training step spends its time and to A/B a change.

    .venv/bin/python scripts/bench_components.py [--config configs/base.yaml] [--batch 4] [--iters 7]

A/B of two commits, interleaved so machine noise hits both alike (what bench/NOTES.md quotes):

    git worktree add /tmp/before <commit>
    for i in 1 2 3; do
      (cd /tmp/before && python /work/main/scripts/bench_components.py --label before)
      python scripts/bench_components.py --label after
    done

The script imports `jaxcodec` from the current directory, so each run measures the checkout it runs in.
Prints one JSON line per part: median milliseconds of the jitted forward and of the gradient w.r.t. parameters and
input (the cotangent is random, so XLA cannot fold the backward pass away).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def _median_ms(fn, iters: int) -> float:
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 1)


def time_part(module, x, iters: int) -> dict:
    """Forward, and forward + backward (w.r.t. parameters and input) with a fixed random cotangent."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    graphdef, state = nnx.split(module)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    out = jax.eval_shape(forward, state, x)
    rng = np.random.default_rng(0)
    cotangent = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(s.dtype)), out)
    fwd = jax.jit(forward)
    grad = jax.jit(lambda state, x, cot: jax.vjp(forward, state, x)[1](cot))
    return {"forward_ms": _median_ms(lambda: fwd(state, x), iters),
            "forward_backward_ms": _median_ms(lambda: grad(state, x, cotangent), iters)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/base.yaml")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--label", default="", help="tag of this checkout in the output")
    args = parser.parse_args()
    sys.path.insert(0, str(Path.cwd()))
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jaxcodec import config as config_lib
    from jaxcodec.models.discriminators import Discriminators
    from jaxcodec.models.seanet import SEANetDecoder, SEANetEncoder

    config = config_lib.load(args.config)
    m = config.model
    samples = int(args.seconds * m.sample_rate)
    frames = samples // m.hop_length
    rng = np.random.default_rng(0)
    encoder = SEANetEncoder(m, rngs=nnx.Rngs(0))
    decoder = SEANetDecoder(m, rngs=nnx.Rngs(1))
    parts = {
        "encoder": (encoder, (args.batch, samples, 1)),
        "decoder": (decoder, (args.batch, frames, m.dimension)),
        "decoder_lstm": (decoder.lstm, (args.batch, frames, m.n_filters * 2 ** len(m.ratios))),
        "discriminators": (Discriminators(config.disc, rngs=nnx.Rngs(2)), (args.batch, samples)),
    }
    for name, (module, shape) in parts.items():
        x = jnp.asarray(0.1 * rng.standard_normal(shape).astype(np.float32))
        row = {"label": args.label, "part": name, "batch": args.batch, "config": args.config,
               **time_part(module, x, args.iters)}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
