"""Residual vector quantizer with EMA codebooks (EnCodec `quantization/core_vq.py`, SoundStream).

Level l quantizes the residual r_l = z − Σ_{j<l} q_j to its nearest code; the decoder gets z + sg(Σ q − z), the
straight-through estimator applied once to the sum (audiocraft's fix of encodec issue #25: the original per-level
form `residual - quantized` cuts every level but the first off from the encoder's gradient).

Codebooks are not parameters: they are `Codebook` state updated by exponential moving averages of the cluster
counts and sums (decay, Laplace smoothing), outside the differentiated function. The forward returns those
statistics summed over the *global* batch (under `jax.jit` with a sharded batch the sums are all-reduced by the
compiler), so every device applies the same update. The update itself is the pure `ema_update`, with
`kmeans` (first-batch initialisation) and `reseed` (dead codes) beside it, each small enough to be checked
against a numpy reference.

Dead codes (EMA count below `dead_code_threshold`) are re-seeded *before* the batch is quantized, with vectors
drawn from that batch's residuals at their level, so a re-seeded code can win frames in the very step that
re-seeds it. Re-seeding after the EMA step (vector-quantize-pytorch) seeds codes from the previous batch; early
in training the encoder output drifts further per step than its spread across frames, those codes are never
chosen, and every level collapses to one or two codes (seen in the tiny demo run). EnCodec re-seeds before its
EMA step, which then overwrites the new codes.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcodec.config import RVQConfig


class Codebook(nnx.Variable):
    """Quantizer state updated by EMA, not by the optimizer."""


@dataclasses.dataclass(frozen=True)
class CodebookStats:
    """What one forward saw, per level: the inputs of the EMA update (a pytree, globally summed)."""

    counts_qk: jax.Array  # frames assigned to each code
    sums_qkd: jax.Array  # sum of the residuals assigned to each code
    reseeded_qk: jax.Array  # codes that were dead and were re-seeded from this batch before quantizing
    replacements_qkd: jax.Array  # the vectors they were re-seeded with
    mask_qbt: jax.Array  # which (level, example, frame) took part (padding and quantizer dropout excluded)


jax.tree_util.register_dataclass(CodebookStats, data_fields=[f.name for f in dataclasses.fields(CodebookStats)],
                                 meta_fields=[])


@dataclasses.dataclass(frozen=True)
class QuantizerOutput:
    quantized_btd: jax.Array  # decoder input: z + sg(Σ_active q − z)
    levels_qbtd: jax.Array  # per-level straight-through outputs r_l + sg(q_l − r_l), zero where inactive
    codes_bqt: jax.Array  # int32 code indices
    commitment_loss: jax.Array  # mean over active levels of ‖r_l − sg(q_l)‖², over valid frames
    stats: CodebookStats


jax.tree_util.register_dataclass(QuantizerOutput, data_fields=[f.name for f in dataclasses.fields(QuantizerOutput)],
                                 meta_fields=[])


def nearest_code(x_nd: jax.Array, embed_kd: jax.Array) -> jax.Array:
    """Index of the closest code in squared Euclidean distance (ties → lowest index, as torch.max).

    Distances use the expanded form |x|² − 2x·e + |e|² (one matmul, no [n, k, d] tensor), after moving the origin
    to the codebook's mean: distances are translation invariant, but the expanded form's float32 rounding error
    scales with |x|². Latents with a large common offset (seen: norm ~5300, frame-to-frame spread 0.2, in the
    demo's training) otherwise get distances whose rounding error (~3) exceeds the differences between codes."""
    center_d = jax.lax.stop_gradient(jnp.mean(embed_kd, axis=0))
    x_nd, embed_kd = x_nd - center_d, embed_kd - center_d
    dist_nk = (jnp.sum(x_nd**2, -1, keepdims=True) - 2 * x_nd @ embed_kd.T + jnp.sum(embed_kd**2, -1)[None])
    return jnp.argmin(dist_nk, axis=-1).astype(jnp.int32)


def kmeans(samples_nd: jax.Array, weights_n: jax.Array, means_kd: jax.Array, iters: int):
    """Lloyd's k-means from given initial means; `weights_n` (0/1) excludes padding. EnCodec's `kmeans`:
    empty clusters keep their previous mean; returns the means and the last assignment's counts."""
    k = means_kd.shape[0]

    def step(carry, _):
        means, _ = carry
        onehot_nk = jax.nn.one_hot(nearest_code(samples_nd, means), k, dtype=samples_nd.dtype) * weights_n[:, None]
        bins_k = onehot_nk.sum(0)
        new_means = (onehot_nk.T @ samples_nd) / jnp.maximum(bins_k, 1.0)[:, None]
        return (jnp.where((bins_k == 0)[:, None], means, new_means), bins_k), None

    (means, bins), _ = jax.lax.scan(step, (means_kd, jnp.zeros((k,), samples_nd.dtype)), None, length=iters)
    return means, bins


def sample_rows(key: jax.Array, samples_nd: jax.Array, weights_n: jax.Array, count: int) -> jax.Array:
    """`count` rows drawn uniformly among those with weight 1 (without replacement when there are enough)."""
    n_valid = weights_n.sum()
    p = weights_n / jnp.maximum(n_valid, 1.0)
    # Without replacement needs at least `count` valid rows; the branch is static when shapes say it is impossible.
    if samples_nd.shape[0] < count:
        idx = jax.random.choice(key, samples_nd.shape[0], (count,), replace=True, p=p)
    else:
        key_a, key_b = jax.random.split(key)
        idx = jnp.where(n_valid >= count,
                        jax.random.choice(key_a, samples_nd.shape[0], (count,), replace=False, p=p),
                        jax.random.choice(key_b, samples_nd.shape[0], (count,), replace=True, p=p))
    return samples_nd[idx]


def reseed(embed_qkd, embed_avg_qkd, cluster_size_qk, reseeded_qk, replacements_qkd, threshold: float):
    """Re-seeded codes take their replacement vector, with m and N reset to (vector · threshold, threshold) so
    e = m / N holds (vector-quantize-pytorch's reset) and the code has one decay period to win frames."""
    mask = reseeded_qk[..., None]
    return (jnp.where(mask, replacements_qkd, embed_qkd),
            jnp.where(mask, replacements_qkd * threshold, embed_avg_qkd),
            jnp.where(reseeded_qk, threshold, cluster_size_qk))


def ema_update(embed_qkd, embed_avg_qkd, cluster_size_qk, counts_qk, sums_qkd, *, decay: float, epsilon: float):
    """One EMA step of every level. Returns (embed, embed_avg, cluster_size).

    EnCodec's update: N ← γN + (1−γ)n, m ← γm + (1−γ)Σx, e = m / Ñ with Laplace-smoothed Ñ = (N+ε)/(ΣN+Kε)·ΣN.
    A level that saw no frame (quantizer dropout) is left untouched.
    """
    k = cluster_size_qk.shape[-1]
    cluster_size = decay * cluster_size_qk + (1 - decay) * counts_qk
    embed_avg = decay * embed_avg_qkd + (1 - decay) * sums_qkd
    total = cluster_size.sum(-1, keepdims=True)
    smoothed = (cluster_size + epsilon) / (total + k * epsilon) * total
    embed = embed_avg / smoothed[..., None]
    seen = (counts_qk.sum(-1) > 0)[:, None]
    return (jnp.where(seen[..., None], embed, embed_qkd), jnp.where(seen[..., None], embed_avg, embed_avg_qkd),
            jnp.where(seen, cluster_size, cluster_size_qk))


def usage_metrics(counts_qk: jax.Array, dead_qk: jax.Array) -> dict[str, jax.Array]:
    """Per-level perplexity of the batch's code usage (exp entropy; K when uniform), dead (re-seeded) codes."""
    p = counts_qk / jnp.maximum(counts_qk.sum(-1, keepdims=True), 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
    return {"perplexity_q": jnp.exp(entropy), "dead_codes_q": dead_qk.sum(-1), "used_codes_q": (counts_qk > 0).sum(-1)}


class ResidualVectorQuantizer(nnx.Module):
    def __init__(self, config: RVQConfig, dim: int, *, rngs: nnx.Rngs):
        self.config, self.dim = config, dim
        n_q, k = config.n_q, config.codebook_size
        # Kaiming-uniform codebooks as EnCodec's `uniform_init`; replaced by k-means on the first batch.
        bound = math.sqrt(6.0 / dim)
        embed = jax.random.uniform(rngs.params(), (n_q, k, dim), jnp.float32, -bound, bound)
        self.embed = Codebook(embed)
        self.embed_avg = Codebook(embed)
        self.cluster_size = Codebook(jnp.zeros((n_q, k), jnp.float32))
        self.initialized = Codebook(jnp.array(not config.kmeans_init))

    def __call__(self, z_btd: jax.Array, mask_bt: jax.Array | None = None, *, n_q: int | None = None,
                 key: jax.Array | None = None) -> QuantizerOutput:
        """Quantizes with the first `n_q` levels (all by default).

        `key` marks a training forward: dead codes are re-seeded from this batch (the returned statistics carry
        the replacements for `update`) and quantizer dropout, when configured, draws each example's levels.
        Without a key (inference) the codebooks are used as they are.
        """
        cfg = self.config
        n_q = cfg.n_q if n_q is None else n_q
        if not 1 <= n_q <= cfg.n_q:
            raise ValueError(f"n_q must be in 1..{cfg.n_q}, got {n_q}")
        z_btd = z_btd.astype(jnp.float32)  # distances and codebooks stay float32 under bf16 compute
        b, t, d = z_btd.shape
        mask_bt = jnp.ones((b, t), jnp.float32) if mask_bt is None else mask_bt.astype(jnp.float32)
        active_qb = jnp.ones((n_q, b), jnp.float32)
        reseed_keys = None
        if key is not None:
            key, key_dropout = jax.random.split(key)
            reseed_keys = jax.random.split(key, n_q)
        if key is not None and cfg.quantizer_dropout > 0:
            key_use, key_n = jax.random.split(key_dropout)
            n_q_b = jnp.where(jax.random.uniform(key_use, (b,)) < cfg.quantizer_dropout,
                              jax.random.randint(key_n, (b,), 1, n_q + 1), n_q)
            active_qb = (jnp.arange(n_q)[:, None] < n_q_b[None]).astype(jnp.float32)

        residual = z_btd
        total_q = jnp.zeros_like(z_btd)
        levels, codes, commit, counts, sums, reseeded, replacements, masks = [], [], [], [], [], [], [], []
        for q in range(n_q):
            level_mask_bt = mask_bt * active_qb[q][:, None]
            embed = self.embed[q]
            dead_k = jnp.zeros((cfg.codebook_size,), bool)
            replacement_kd = jnp.zeros_like(embed)
            if reseed_keys is not None and cfg.dead_code_threshold > 0:
                dead_k = (self.cluster_size[q] < cfg.dead_code_threshold) & (level_mask_bt.sum() > 0)
                replacement_kd = sample_rows(reseed_keys[q], jax.lax.stop_gradient(residual).reshape(-1, d),
                                             level_mask_bt.reshape(-1), cfg.codebook_size)
                replacement_kd = jnp.where(dead_k[:, None], replacement_kd, 0.0)
                embed = jnp.where(dead_k[:, None], replacement_kd, embed)
            idx_bt = nearest_code(residual.reshape(-1, d), embed).reshape(b, t)
            quant = embed[idx_bt]
            onehot = jax.nn.one_hot(idx_bt, cfg.codebook_size, dtype=jnp.float32) * level_mask_bt[..., None]
            counts.append(onehot.sum((0, 1)))
            sums.append(jnp.einsum("btk,btd->kd", onehot, jax.lax.stop_gradient(residual)))
            reseeded.append(dead_k)
            replacements.append(replacement_kd)
            masks.append(level_mask_bt)
            err = jnp.sum((residual - jax.lax.stop_gradient(quant)) ** 2, -1)
            commit.append(jnp.sum(err * level_mask_bt) / (jnp.maximum(level_mask_bt.sum(), 1.0) * d))
            levels.append((residual + jax.lax.stop_gradient(quant - residual)) * level_mask_bt[..., None])
            codes.append(idx_bt)
            total_q = total_q + quant * level_mask_bt[..., None]
            residual = residual - jax.lax.stop_gradient(quant)

        n_active = jnp.maximum(jnp.sum(jnp.stack([m.sum() for m in masks]) > 0), 1)
        return QuantizerOutput(
            quantized_btd=z_btd + jax.lax.stop_gradient(total_q - z_btd),
            levels_qbtd=jnp.stack(levels),
            codes_bqt=jnp.stack(codes, axis=1),
            commitment_loss=jnp.sum(jnp.stack(commit)) / n_active,
            stats=CodebookStats(jnp.stack(counts), jnp.stack(sums), jnp.stack(reseeded), jnp.stack(replacements),
                                jnp.stack(masks)),
        )

    def decode(self, codes_bqt: jax.Array, n_levels: jax.Array | int | None = None) -> jax.Array:
        """Codes [B, n_q', T] (n_q' ≤ n_q levels, first levels first) → latents [B, T, D]. `n_levels` (may be
        traced) keeps only the first n_levels of them: one compiled decoder then serves every bitrate."""
        n_q = codes_bqt.shape[1]
        if n_q > self.config.n_q:
            raise ValueError(f"codes have {n_q} levels, the quantizer has {self.config.n_q}")
        embed = self.embed[...]
        if n_levels is None:
            return sum(embed[q][codes_bqt[:, q]] for q in range(n_q))
        return sum(jnp.where(q < n_levels, embed[q][codes_bqt[:, q]], 0.0) for q in range(n_q))

    def update(self, stats: CodebookStats) -> dict[str, jax.Array]:
        """Applies the forward's re-seeding and the EMA step for the levels in `stats` (outside any gradient);
        returns usage metrics."""
        cfg = self.config
        n_q = stats.counts_qk.shape[0]
        state = reseed(self.embed[:n_q], self.embed_avg[:n_q], self.cluster_size[:n_q], stats.reseeded_qk,
                       stats.replacements_qkd, cfg.dead_code_threshold)
        embed, embed_avg, cluster_size = ema_update(*state, stats.counts_qk, stats.sums_qkd, decay=cfg.decay,
                                                    epsilon=cfg.epsilon)
        self.embed[...] = self.embed[...].at[:n_q].set(embed)
        self.embed_avg[...] = self.embed_avg[...].at[:n_q].set(embed_avg)
        self.cluster_size[...] = self.cluster_size[...].at[:n_q].set(cluster_size)
        return usage_metrics(stats.counts_qk, stats.reseeded_qk)

    def initialize(self, z_btd: jax.Array, mask_bt: jax.Array | None, key: jax.Array) -> None:
        """k-means initialisation of every level from one batch, level by level on the residuals (EnCodec)."""
        cfg = self.config
        z_btd = jax.lax.stop_gradient(z_btd.astype(jnp.float32))
        b, t, d = z_btd.shape
        weights_n = (jnp.ones((b * t,)) if mask_bt is None else mask_bt.reshape(-1)).astype(jnp.float32)
        residual_nd = z_btd.reshape(-1, d)
        embeds, sizes = [], []
        for level_key in jax.random.split(key, cfg.n_q):
            start = sample_rows(level_key, residual_nd, weights_n, cfg.codebook_size)
            means, bins = kmeans(residual_nd, weights_n, start, cfg.kmeans_iters)
            embeds.append(means)
            sizes.append(bins)
            residual_nd = residual_nd - means[nearest_code(residual_nd, means)]
        # embed_avg = means · counts keeps e = m / N consistent from the first EMA step (vector-quantize-pytorch);
        # EnCodec copies the bare means into embed_avg, which shrinks every code by its count on that step.
        self.embed[...] = jnp.stack(embeds)
        self.embed_avg[...] = jnp.stack(embeds) * jnp.stack(sizes)[..., None]
        self.cluster_size[...] = jnp.stack(sizes)
        self.initialized[...] = jnp.array(True)
