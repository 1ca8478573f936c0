"""RVQ: shapes, straight-through gradients, EMA / k-means / dead codes against numpy, sharding invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcodec.config import RVQConfig
from jaxcodec.models import quantizer as rvq

DIM = 8


def make_rvq(**overrides) -> rvq.ResidualVectorQuantizer:
    config = RVQConfig(**{"n_q": 4, "codebook_size": 16, "kmeans_iters": 4, **overrides})
    return rvq.ResidualVectorQuantizer(config, DIM, rngs=nnx.Rngs(0))


def latents(b=4, t=25, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, t, DIM))


# ---- numpy references (written from EnCodec's core_vq.py, independently of the JAX code) ----

def np_nearest(x, embed):
    d = ((x[:, None, :] - embed[None]) ** 2).sum(-1)
    return d.argmin(-1)


def np_kmeans(samples, weights, means, iters):
    means = means.copy()
    bins = np.zeros(len(means))
    for _ in range(iters):
        idx = np_nearest(samples, means)
        bins = np.zeros(len(means))
        new = np.zeros_like(means)
        for n, k in enumerate(idx):
            if weights[n]:
                bins[k] += 1
                new[k] += samples[n]
        for k in range(len(means)):
            if bins[k] > 0:
                means[k] = new[k] / bins[k]
    return means, bins


def np_ema(embed, embed_avg, cluster_size, counts, sums, decay, eps):
    k = cluster_size.shape[-1]
    cs = decay * cluster_size + (1 - decay) * counts
    ea = decay * embed_avg + (1 - decay) * sums
    n = cs.sum(-1, keepdims=True)
    smoothed = (cs + eps) / (n + k * eps) * n
    return ea / smoothed[..., None], ea, cs


def test_shapes_and_code_range():
    q = make_rvq()
    out = q(latents())
    assert out.codes_bqt.shape == (4, 4, 25) and out.codes_bqt.dtype == jnp.int32
    assert int(out.codes_bqt.min()) >= 0 and int(out.codes_bqt.max()) < 16
    assert out.quantized_btd.shape == (4, 25, DIM)
    assert q(latents(), n_q=2).codes_bqt.shape == (4, 2, 25)
    with pytest.raises(ValueError, match="n_q must be in 1..4"):
        q(latents(), n_q=5)


def test_codes_are_nearest_codes_of_residuals_and_decode_matches():
    q = make_rvq()
    z = np.asarray(latents())
    embed = np.asarray(q.embed[...])
    out = q(jnp.asarray(z))
    residual = z.reshape(-1, DIM)
    total = np.zeros_like(residual)
    for level in range(4):
        idx = np_nearest(residual, embed[level])
        np.testing.assert_array_equal(np.asarray(out.codes_bqt[:, level]).reshape(-1), idx)
        residual = residual - embed[level][idx]
        total += embed[level][idx]
    np.testing.assert_allclose(np.asarray(out.quantized_btd).reshape(-1, DIM), total, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(q.decode(out.codes_bqt)), np.asarray(out.quantized_btd), atol=1e-5)
    expected_commit = np.mean([((lvl_in - embed[q][np_nearest(lvl_in, embed[q])]) ** 2).mean()
                               for q, lvl_in in enumerate(_residuals(z.reshape(-1, DIM), embed))])
    np.testing.assert_allclose(float(out.commitment_loss), expected_commit, rtol=1e-5)


def test_decode_with_a_traced_level_count_sums_only_the_first_levels():
    q = make_rvq()
    codes = q(latents()).codes_bqt
    embed = np.asarray(q.embed[...])
    decode = jax.jit(lambda c, n: q.decode(c, n))  # one compilation serves every level count
    for levels in (1, 3):
        by_hand = sum(embed[level][np.asarray(codes[:, level])] for level in range(levels))
        np.testing.assert_allclose(np.asarray(decode(codes, jnp.int32(levels))), by_hand, atol=1e-5)
        np.testing.assert_allclose(np.asarray(q.decode(codes[:, :levels])), by_hand, atol=1e-5)


def _residuals(x, embed):
    out = []
    for level in range(embed.shape[0]):
        out.append(x)
        x = x - embed[level][np_nearest(x, embed[level])]
    return out


def test_straight_through_gradient_equals_gradient_wrt_quantized():
    q = make_rvq()
    z = latents()
    target = jax.random.normal(jax.random.key(5), z.shape)

    def loss_of_quantized(quantized):
        return jnp.sum(jnp.sin(quantized) * target)

    grad_z = jax.grad(lambda z: loss_of_quantized(q(z).quantized_btd))(z)
    grad_q = jax.grad(loss_of_quantized)(q(z).quantized_btd)
    np.testing.assert_allclose(np.asarray(grad_z), np.asarray(grad_q), rtol=1e-6)
    assert float(jnp.abs(grad_z).sum()) > 0
    # Every level's straight-through output passes the gradient to the encoder (audiocraft's RVQ fix).
    for level in range(4):
        grad_level = jax.grad(lambda z, level=level: jnp.sum(q(z).levels_qbtd[level] * target))(z)
        np.testing.assert_allclose(np.asarray(grad_level), np.asarray(target), rtol=1e-6)


def test_kmeans_matches_numpy():
    samples = np.random.default_rng(0).normal(size=(60, DIM)).astype(np.float32)
    weights = (np.arange(60) < 50).astype(np.float32)  # the last ten rows are padding
    start = samples[:6].copy()
    means, bins = rvq.kmeans(jnp.asarray(samples), jnp.asarray(weights), jnp.asarray(start), 5)
    ref_means, ref_bins = np_kmeans(samples, weights, start, 5)
    np.testing.assert_allclose(np.asarray(means), ref_means, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(bins), ref_bins)


def test_ema_update_matches_numpy_and_skips_unseen_levels():
    rng = np.random.default_rng(1)
    n_q, k = 3, 5
    embed = rng.normal(size=(n_q, k, DIM)).astype(np.float32)
    cluster_size = rng.uniform(0, 5, size=(n_q, k)).astype(np.float32)
    embed_avg = embed * cluster_size[..., None]
    counts = rng.integers(0, 4, size=(n_q, k)).astype(np.float32)
    counts[2] = 0  # a level that saw no frame (quantizer dropout) must stay untouched
    sums = rng.normal(size=(n_q, k, DIM)).astype(np.float32)
    sums[2] = 0
    got = rvq.ema_update(*(jnp.asarray(a) for a in (embed, embed_avg, cluster_size, counts, sums)),
                         decay=0.9, epsilon=1e-5)
    ref = np_ema(embed, embed_avg, cluster_size, counts, sums, 0.9, 1e-5)
    for g, r, original in zip(got, ref, (embed, embed_avg, cluster_size), strict=True):
        np.testing.assert_allclose(np.asarray(g)[:2], r[:2], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(g)[2], original[2])


def test_dead_codes_are_reseeded_from_the_current_batch_and_win_frames():
    """Codes whose EMA count is below the threshold take vectors of this batch's residuals before quantizing,
    so they are chosen in the same step; `update` then applies (reseed, EMA) exactly as numpy does."""
    q = make_rvq(n_q=2, dead_code_threshold=1.0)
    z = latents(b=4, t=25)
    q.cluster_size[...] = jnp.asarray(np.tile(np.r_[np.full(8, 5.0), np.zeros(8)], (2, 1)), jnp.float32)
    # Move every live code far away: only re-seeded codes (drawn from the batch) can be nearest.
    q.embed[...] = q.embed[...].at[:, :8].add(100.0)
    before = [np.asarray(v[...]).copy() for v in (q.embed, q.embed_avg, q.cluster_size)]
    out = q(z, key=jax.random.key(7))
    reseeded = np.asarray(out.stats.reseeded_qk)
    np.testing.assert_array_equal(reseeded, np.tile(np.r_[np.zeros(8), np.ones(8)], (2, 1)).astype(bool))
    codes = np.asarray(out.codes_bqt)
    assert codes.min() >= 8  # every frame went to a re-seeded code
    repl = np.asarray(out.stats.replacements_qkd)
    residual0 = np.asarray(z).reshape(-1, DIM)
    for vec in repl[0, 8:]:  # level-1 replacements are rows of the batch
        assert np.min(np.abs(residual0 - vec).sum(-1)) < 1e-6
    q.update(out.stats)
    e, ea, cs = before
    mask = reseeded[..., None]
    e, ea, cs = np.where(mask, repl, e), np.where(mask, repl * 1.0, ea), np.where(reseeded, 1.0, cs)
    ref = np_ema(e, ea, cs, np.asarray(out.stats.counts_qk), np.asarray(out.stats.sums_qkd), 0.99, 1e-5)
    for got, want in zip((q.embed, q.embed_avg, q.cluster_size), ref, strict=True):
        np.testing.assert_allclose(np.asarray(got[...]), want, rtol=1e-5, atol=1e-5)
    # Inference (no key) never re-seeds.
    assert not np.asarray(q(z).stats.reseeded_qk).any()


def test_update_uses_forward_statistics():
    """Module-level wiring: counts/sums from the forward equal a numpy histogram of the codes, padding excluded,
    and `update` applies the numpy EMA to them."""
    q = make_rvq()
    z = latents()
    mask = jnp.asarray(np.arange(25) < 20, jnp.float32)[None].repeat(4, 0)
    out = q(z, mask)
    codes = np.asarray(out.codes_bqt)
    res = np.stack(_residuals(np.asarray(z).reshape(-1, DIM), np.asarray(q.embed[...]))).reshape(4, 4, 25, DIM)
    for level in range(4):
        c = codes[:, level, :20].reshape(-1)
        np.testing.assert_array_equal(np.asarray(out.stats.counts_qk[level]), np.bincount(c, minlength=16))
        sums = np.zeros((16, DIM))
        np.add.at(sums, c, res[level][:, :20].reshape(-1, DIM))
        np.testing.assert_allclose(np.asarray(out.stats.sums_qkd[level]), sums, rtol=1e-5, atol=1e-5)
    before = np.asarray(q.embed[...]).copy(), np.asarray(q.embed_avg[...]), np.asarray(q.cluster_size[...])
    metrics = q.update(out.stats)
    ref = np_ema(*before, np.asarray(out.stats.counts_qk), np.asarray(out.stats.sums_qkd), 0.99, 1e-5)
    np.testing.assert_allclose(np.asarray(q.embed[...]), ref[0], rtol=1e-5, atol=1e-6)
    counts = np.asarray(out.stats.counts_qk)
    p = counts / counts.sum(-1, keepdims=True)
    perplexity = np.exp(-(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(-1))
    np.testing.assert_allclose(np.asarray(metrics["perplexity_q"]), perplexity, rtol=1e-5)


def test_sample_rows_only_draws_valid_rows():
    samples = jnp.arange(40, dtype=jnp.float32).reshape(20, 2)
    weights = jnp.asarray(np.arange(20) % 3 == 0, jnp.float32)  # 7 valid rows
    many = np.asarray(rvq.sample_rows(jax.random.key(0), samples, weights, 12))  # more than valid: replacement
    few = np.asarray(rvq.sample_rows(jax.random.key(1), samples, weights, 5))  # fewer: no replacement
    valid = set(map(tuple, np.asarray(samples)[np.asarray(weights) > 0]))
    assert all(tuple(r) in valid for r in many) and all(tuple(r) in valid for r in few)
    assert len(set(map(tuple, few))) == 5


def test_initialize_runs_kmeans_level_by_level():
    """k-means init equals numpy k-means on each level's residual, from the same starting rows."""
    q = make_rvq(kmeans_iters=3)
    z = latents(b=8, t=30)
    key = jax.random.key(3)
    q.initialize(z, None, key)
    assert bool(q.initialized[...])
    residual = np.asarray(z).reshape(-1, DIM)
    weights = np.ones(len(residual), np.float32)
    for level, level_key in enumerate(jax.random.split(key, 4)):
        start = np.asarray(rvq.sample_rows(level_key, jnp.asarray(residual), jnp.asarray(weights), 16))
        means, bins = np_kmeans(residual, weights, start, 3)
        np.testing.assert_allclose(np.asarray(q.embed[level]), means, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(q.cluster_size[level]), bins)
        residual = residual - means[np_nearest(residual, means)]
    np.testing.assert_allclose(np.asarray(q.embed_avg[...]),
                               np.asarray(q.embed[...]) * np.asarray(q.cluster_size[...])[..., None],
                               rtol=1e-5, atol=1e-5)


def test_quantizer_dropout_masks_levels_per_example():
    q = make_rvq(quantizer_dropout=1.0)
    out = q(latents(b=16), key=jax.random.key(0))
    active = np.asarray(out.stats.mask_qbt)[:, :, 0]  # [n_q, B]
    n_q_b = active.sum(0)
    assert set(n_q_b) > {1} and n_q_b.min() >= 1 and n_q_b.max() <= 4
    np.testing.assert_array_equal(active, (np.arange(4)[:, None] < n_q_b[None]).astype(np.float32))
    z_levels = np.asarray(out.levels_qbtd)
    assert np.all(z_levels[~active.astype(bool)] == 0)


def test_statistics_and_forward_identical_on_1_and_8_devices():
    assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
    q = make_rvq()
    z = latents(b=8, t=25)
    graphdef, state = nnx.split(q)

    @jax.jit
    def forward_and_update(state, z):
        module = nnx.merge(graphdef, state)
        out = module(z, key=jax.random.key(0))
        metrics = module.update(out.stats)
        return out.codes_bqt, out.commitment_loss, out.stats.counts_qk, out.stats.sums_qkd, metrics, nnx.state(module)

    single = forward_and_update(state, z)
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("data",))
    z_sharded = jax.device_put(z, NamedSharding(mesh, P("data")))
    assert len(z_sharded.sharding.device_set) == 8
    sharded = forward_and_update(state, z_sharded)
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "biu":  # codes, counts, re-seeding decisions: identical
            np.testing.assert_array_equal(a, b)
        else:  # sums reduced in another order across devices
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_kmeans_initialisation_identical_on_1_and_8_devices():
    """k-means init from a batch sharded over 8 devices (global sums all-reduced by the compiler) equals the
    1-device init, on data with well-separated clusters. (On a tight cloud of near-duplicates, as an untrained
    encoder's output, k-means assignments flip under 1e-7 input noise even on one device: see
    tests/train/test_training.py.)"""
    q = make_rvq(n_q=2, codebook_size=16, kmeans_iters=10)
    centres = 4.0 * jax.random.normal(jax.random.key(1), (16, DIM))
    assign = jax.random.randint(jax.random.key(2), (8, 25), 0, 16)
    z = centres[assign] + 0.1 * jax.random.normal(jax.random.key(3), (8, 25, DIM))
    mask = jnp.ones((8, 25)).at[0, 20:].set(0.0)
    graphdef, state = nnx.split(q)

    @jax.jit
    def init(state, z, mask):
        module = nnx.merge(graphdef, state)
        module.initialize(z, mask, jax.random.key(4))
        return nnx.state(module)

    single = init(state, z, mask)
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("data",))
    sharded = init(state, jax.device_put(z, NamedSharding(mesh, P("data"))),
                   jax.device_put(mask, NamedSharding(mesh, P("data"))))
    np.testing.assert_array_equal(np.asarray(single["cluster_size"][...]), np.asarray(sharded["cluster_size"][...]))
    np.testing.assert_allclose(np.asarray(sharded["embed"][...]), np.asarray(single["embed"][...]), rtol=1e-5,
                               atol=1e-6)
    assert float(np.asarray(single["cluster_size"][...])[0].sum()) == 8 * 25 - 5  # padding excluded


def test_nearest_code_is_exact_under_a_large_common_offset():
    """Latents far from the origin with a small spread (the demo's encoder drifted to norm ~5300 with spread
    0.2): the nearest code must match a float64 brute-force search, which the plain expanded distance
    |x|² − 2x·e + |e|² in float32 does not (its rounding error ~|x|²·1e-7 exceeds the code gaps)."""
    rng = np.random.default_rng(0)
    offset = rng.standard_normal(DIM) * 2000.0
    embed = offset + 0.3 * rng.standard_normal((16, DIM))
    x = offset + 0.3 * rng.standard_normal((200, DIM))
    expected = np_nearest(x.astype(np.float64), embed.astype(np.float64))
    got = np.asarray(rvq.nearest_code(jnp.asarray(x, jnp.float32), jnp.asarray(embed, jnp.float32)))
    agree = float(np.mean(got == expected))
    assert agree > 0.97, agree  # float32 storage of x and embed (~1e-4 absolute at this norm) may flip near-ties
    naive = np.argmin((x**2).sum(-1, keepdims=True).astype(np.float32) - 2 * (x.astype(np.float32)
                      @ embed.astype(np.float32).T) + (embed**2).sum(-1).astype(np.float32)[None], axis=-1)
    assert np.mean(naive == expected) < 0.5  # the uncentred form really fails here
