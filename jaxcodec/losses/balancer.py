"""EnCodec's loss balancer (facebookresearch/encodec encodec/balancer.py) as pure functions of a pytree state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp


def balancer_init(names: Sequence[str]) -> dict[str, dict[str, jax.Array]]:
    """Empty state of EnCodec's gradient-norm EMA: {"fix": {name: 0}, "total": {name: 0}}, a pytree."""
    zeros = {name: jnp.zeros((), jnp.float32) for name in names}
    return {"fix": dict(zeros), "total": dict(zeros)}


def balance_gradients(grads: Mapping[str, jax.Array], weights: Mapping[str, float],
                      state: Mapping[str, Mapping[str, jax.Array]], ema_decay: float = 0.999,
                      total_norm: float = 1.0, epsilon: float = 1e-12, per_batch_item: bool = True
                      ) -> tuple[jax.Array, dict[str, dict[str, jax.Array]], dict[str, jax.Array]]:
    """EnCodec's loss balancer (facebookresearch/encodec, encodec/balancer.py, `Balancer.backward`) as a pure
    function of the per-loss gradients w.r.t. the decoded waveform, grads[name] [B, ...]:

        norm_i = mean_b ||g_i[b]||₂ (per_batch_item) or ||g_i||₂
        avg_i  = EMA of norm_i, debiased: fix ← β·fix + 1, total ← β·total + norm_i, avg_i = total / fix
        G      = Σ_i g_i · (w_i / Σ_j w_j) · total_norm / (epsilon + avg_i)

    encodec's averager is called with weight 1 (its `count` only weights the cross-worker average, which a
    global-batch norm already is). Returns (G in the gradients' dtype, new state, metrics); metrics hold each
    loss's norm, EMA norm, share of the summed EMA norms (encodec's monitor `ratio_*`) and applied scale, so
    the effective loss Σ_i scale_i · loss_i can be logged.
    """
    missing = [name for name in grads if name not in weights or name not in state["fix"]]
    if missing:
        raise KeyError(f"balancer has no weight or state for losses {missing}; weights: {sorted(weights)}")
    norms = {}
    for name, grad in grads.items():
        grad32 = grad.astype(jnp.float32)
        if per_batch_item:
            norms[name] = jnp.mean(jnp.sqrt(jnp.sum(grad32**2, axis=tuple(range(1, grad32.ndim)))))
        else:
            norms[name] = jnp.sqrt(jnp.sum(grad32**2))
    new_state = {"fix": dict(state["fix"]), "total": dict(state["total"])}
    avg_norms = {}
    for name, norm in norms.items():
        new_state["fix"][name] = state["fix"][name] * ema_decay + 1.0
        new_state["total"][name] = state["total"][name] * ema_decay + norm
        avg_norms[name] = new_state["total"][name] / new_state["fix"][name]
    sum_avg_norms = sum(avg_norms.values())
    total_weight = sum(weights[name] for name in grads)
    if total_weight <= 0:
        raise ValueError(f"balancer weights must sum to a positive number, got {dict(weights)}")
    combined = None
    metrics = {}
    for name, grad in grads.items():
        scale = (weights[name] / total_weight) * total_norm / (epsilon + avg_norms[name])
        term = grad.astype(jnp.float32) * scale
        combined = term if combined is None else combined + term
        metrics[f"grad_norm/{name}"] = norms[name]
        metrics[f"avg_grad_norm/{name}"] = avg_norms[name]
        metrics[f"grad_ratio/{name}"] = avg_norms[name] / sum_avg_norms
        metrics[f"balancer_scale/{name}"] = scale
    first = next(iter(grads.values()))
    return combined.astype(first.dtype), new_state, metrics
