"""scripts/torch_peers, the PyTorch side of the throughput benchmark, against independent references: its mel
losses, quantizer, EMA update and adversarial losses against jaxcodec's (and numpy), its peers against the
parameter counts of the released models, its train steps and its command line on tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcodec import config as cfg
from jaxcodec import losses, spectral
from jaxcodec.models.quantizer import ema_update as jax_ema_update
from scripts import torch_peers as tp

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/tiny.yaml")


def _speechtokenizer_or_skip() -> None:
    try:
        tp.speechtokenizer_class()
    except ModuleNotFoundError:
        pytest.skip("speechtokenizer is not installed (make install adds it)")


def _rel_close(ours, reference, rel: float, what: str) -> None:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    scale = float(np.max(np.abs(reference)))
    assert scale > 0, f"{what}: degenerate reference"
    err = float(np.max(np.abs(ours - reference)))
    assert err <= rel * scale, f"{what}: max error {err:.3g} vs max |reference| {scale:.3g}"


# ------------------------------------------------------------------------------------------------ mel losses


@pytest.mark.parametrize("form", ["encodec", "speechtokenizer"])
def test_multiscale_mel_loss_equals_jaxcodec(form):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, 8000))).astype(np.float32)  # 0.5 s: every scale (n_fft ≤ 2048) fits
    y = (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
    ours = tp.MultiScaleMelLoss(form, 16_000)(torch.from_numpy(x), torch.from_numpy(y)).item()
    reference = float(spectral.multiscale_mel_loss(jnp.asarray(x), jnp.asarray(y), form, 16_000))
    assert reference > 0.01
    assert abs(ours - reference) <= 1e-4 * reference, (ours, reference)


def test_mel_filterbanks_equal_jaxcodec():
    for scale, theirs in zip(tp.speechtokenizer_mel_scales(), spectral.speechtokenizer_mel_scales(16_000),
                             strict=True):
        ours = tp.mel_filterbank(scale.n_fft // 2 + 1, scale.n_mels, 16_000, scale.f_min, scale.slaney_norm)
        np.testing.assert_allclose(ours, theirs.filterbank(), rtol=1e-6, atol=1e-9)
    for scale, theirs in zip(tp.encodec_mel_scales(), spectral.encodec_mel_scales(16_000), strict=True):
        assert (scale.n_fft, scale.hop_length, scale.edge_padding) == (theirs.n_fft, theirs.hop_length,
                                                                      theirs.edge_padding)
        ours = tp.mel_filterbank(scale.n_fft // 2 + 1, scale.n_mels, 16_000, scale.f_min, scale.slaney_norm)
        np.testing.assert_allclose(ours, theirs.filterbank(), rtol=1e-6, atol=1e-9)


# -------------------------------------------------------------------------------------------------- quantizer


def _numpy_rvq(z_nd: np.ndarray, embed_qkd: np.ndarray):
    """Brute-force residual quantization: every code's distance, float64."""
    residual, codes, commitments, total = z_nd.astype(np.float64), [], [], np.zeros(z_nd.shape)
    for embed_kd in embed_qkd.astype(np.float64):
        idx = np.argmin(((residual[:, None, :] - embed_kd[None]) ** 2).sum(-1), axis=1)
        commitments.append(np.mean((residual - embed_kd[idx]) ** 2))
        codes.append(idx)
        total = total + embed_kd[idx]
        residual = residual - embed_kd[idx]
    return np.stack(codes), total, float(np.mean(commitments))


def test_straight_through_rvq_equals_brute_force_numpy():
    rng = np.random.default_rng(1)
    n_q, k, d = 4, 16, 6
    embed = rng.standard_normal((n_q, k, d)).astype(np.float32) * np.array([1.0, 0.5, 0.25, 0.1])[:, None, None]
    z = (rng.standard_normal((3, 7, d)) + 2.0).astype(np.float32)  # an offset, as real latents have
    rvq = tp.StraightThroughRVQ(torch.from_numpy(embed), torch.from_numpy(embed.copy()), torch.ones(n_q, k))
    z_t = torch.from_numpy(z).requires_grad_(True)
    out = rvq(z_t)
    codes, total, commitment = _numpy_rvq(z.reshape(-1, d), embed)
    assert len(np.unique(codes[0])) > 3  # a non-trivial assignment
    np.testing.assert_array_equal(out.codes_qn.numpy(), codes)
    np.testing.assert_allclose(out.quantized_btd.detach().numpy().reshape(-1, d), total, rtol=1e-5, atol=1e-5)
    assert abs(out.commitment.item() - commitment) <= 1e-5 * commitment
    # Straight-through: the decoder input passes its gradient to z unchanged.
    (grad,) = torch.autograd.grad(out.quantized_btd.sum(), z_t)
    np.testing.assert_array_equal(grad.numpy(), np.ones_like(z))

    counts, sums = rvq.statistics(out.codes_qn, out.residuals_qnd)
    residual = z.reshape(-1, d).astype(np.float64)
    for q in range(n_q):
        onehot = np.eye(k)[codes[q]]
        np.testing.assert_array_equal(counts[q].numpy(), onehot.sum(0))
        np.testing.assert_allclose(sums[q].numpy(), onehot.T @ residual, rtol=1e-5, atol=1e-5)
        residual = residual - embed[q].astype(np.float64)[codes[q]]


def test_ema_update_equals_jaxcodec():
    rng = np.random.default_rng(2)
    n_q, k, d = 3, 8, 4
    embed = rng.standard_normal((n_q, k, d)).astype(np.float32)
    embed_avg = rng.standard_normal((n_q, k, d)).astype(np.float32)
    cluster_size = rng.uniform(0.0, 5.0, (n_q, k)).astype(np.float32)
    counts = rng.integers(0, 4, (n_q, k)).astype(np.float32)
    counts[2] = 0.0  # a level that saw no frame stays as it was
    sums = rng.standard_normal((n_q, k, d)).astype(np.float32) * counts[..., None]
    ours = tp.ema_update(*map(torch.from_numpy, (embed, embed_avg, cluster_size, counts, sums)), decay=0.9,
                         epsilon=1e-5)
    theirs = jax_ema_update(*map(jnp.asarray, (embed, embed_avg, cluster_size, counts, sums)), decay=0.9,
                            epsilon=1e-5)
    for name, a, b in zip(("embed", "embed_avg", "cluster_size"), ours, theirs, strict=True):
        _rel_close(a.numpy(), np.asarray(b), 1e-5, name)
    np.testing.assert_array_equal(ours[0][2].numpy(), embed[2])


# --------------------------------------------------------------------------------------- adversarial losses


def _logits_and_fmaps(seed: int):
    rng = np.random.default_rng(seed)
    shapes = [(2, 5, 3, 1), (2, 17)]  # an STFT discriminator's 4-D logits, a HiFi-GAN flattened one
    logits = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    fmaps = [[rng.standard_normal((2, 4, 3)).astype(np.float32) for _ in range(n)] for n in (3, 2)]
    return logits, fmaps


@pytest.mark.parametrize("kind", ["hinge", "lsgan"])
def test_adversarial_losses_equal_jaxcodec(kind):
    real, _ = _logits_and_fmaps(3)
    fake, _ = _logits_and_fmaps(4)
    as_torch = lambda arrays: [torch.from_numpy(a) for a in arrays]
    as_jax = lambda arrays: [jnp.asarray(a) for a in arrays]
    _rel_close(tp.discriminator_loss(as_torch(real), as_torch(fake), kind).item(),
               losses.discriminator_loss(as_jax(real), as_jax(fake), kind), 1e-6, "discriminator loss")
    _rel_close(tp.generator_adversarial_loss(as_torch(fake), kind).item(),
               losses.generator_adversarial_loss(as_jax(fake), kind), 1e-6, "generator loss")


def test_relative_feature_matching_equals_jaxcodec():
    _, real = _logits_and_fmaps(5)
    _, fake = _logits_and_fmaps(6)
    ours = tp.feature_matching_loss([[torch.from_numpy(f) for f in fm] for fm in real],
                                    [[torch.from_numpy(f) for f in fm] for fm in fake])
    theirs = losses.feature_matching_loss([[jnp.asarray(f) for f in fm] for fm in real],
                                          [[jnp.asarray(f) for f in fm] for fm in fake], relative=True)
    _rel_close(ours.item(), theirs, 1e-6, "feature matching")


# ------------------------------------------------------------------------------------------------------ peers


def test_peers_have_the_released_parameter_counts():
    # DESIGN.md's measured counts: EnCodec at 16 kHz, 8 × 1024; SpeechTokenizer's released spt_base_cfg.json.
    assert tp.count_parameters(tp.build_peer("encodec", ROOT / "configs/base.yaml", 0)) == 14_851_810
    _speechtokenizer_or_skip()
    peer = tp.build_peer("speechtokenizer", ROOT / "configs/speechtokenizer.yaml", 0)
    assert tp.count_parameters(peer) == 103_675_586


@pytest.mark.parametrize("peer", ["encodec", "speechtokenizer"])
def test_tiny_peers_encode_with_random_codebooks_and_round_trip_weights(peer, tmp_path):
    if peer == "speechtokenizer":
        _speechtokenizer_or_skip()
    config = cfg.load(TINY)
    model = tp.build_peer(peer, TINY, seed=0)
    wav = tp.synthetic_batch(2, 0.5, 16_000, seed=0)
    with torch.inference_mode():
        codes = tp.encode_function(peer, model, config)(wav)
    assert codes.shape == (2, config.rvq.n_q, 25)
    assert int(codes.min()) >= 0 and int(codes.max()) < config.rvq.codebook_size
    # An untrained encoder's output hardly varies over time, so each level may pick one code throughout; the
    # random codebooks still make the levels disagree (zero codebooks would give code 0 everywhere).
    assert len(torch.unique(codes)) > 1
    # The harness's quantizer, on the peer's codebooks, assigns the codes the peer's own quantizer does.
    with torch.no_grad():
        z_btd = model.encoder(wav).transpose(1, 2)
        harness_codes = tp.StraightThroughRVQ.from_peer(model, config.rvq)(z_btd).codes_qn
    assert torch.equal(harness_codes.reshape(config.rvq.n_q, 2, 25).transpose(0, 1), codes)

    tp.save_weights(model, tmp_path / "w.safetensors")
    other = tp.load_weights(tp.build_peer(peer, TINY, seed=1), tmp_path / "w.safetensors")
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------------------------ train steps


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _all_changed(before: dict[str, torch.Tensor], module: torch.nn.Module, skip: str | None = None) -> None:
    unchanged = [name for name, p in module.named_parameters()
                 if torch.equal(before[name], p.detach()) and not (skip and name.endswith(skip))]
    assert not unchanged, f"parameters not updated: {unchanged[:5]}"


@pytest.fixture
def one_thread():
    """One torch thread: tiny models gain nothing from two, and two threads slowed these steps up to 40-fold
    whenever another process held a core (OpenMP threads waiting on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("step_class", [tp.GeneratorStep, tp.GANStep])
def test_one_train_step_updates_every_parameter_and_the_codebooks(step_class, one_thread):
    config = cfg.load(TINY)
    model = tp.build_peer("encodec", TINY, seed=0)
    step = step_class(model, config)
    before = _snapshot(model)
    codebooks_before = step.rvq.embed.clone()
    disc_before = _snapshot(step.disc) if step_class is tp.GANStep else None

    metrics = step(tp.synthetic_batch(2, 0.5, 16_000, seed=0))
    assert all(np.isfinite(v) for v in metrics.values())
    expected = {"loss/total", "loss/l1", "loss/mel", "loss/commit"}
    if disc_before is not None:
        expected |= {"loss/adv", "loss/feat", "loss/disc"}
        # Not the biases: while every logit is inside (−1, 1) the hinge loss's real and fake gradients cancel
        # exactly on the last convs' biases (−1 + 1), so those rightly stay put on a first step.
        _all_changed(disc_before, step.disc, skip="bias")
    assert set(metrics) == expected
    # Every encoder parameter moved: the straight-through path carries the gradient through the quantizer.
    _all_changed(before, model)
    assert not torch.equal(codebooks_before, step.rvq.embed)
    # The peer's own codebooks are views of the harness's, so its encode sees the EMA update.
    assert torch.equal(tp.peer_codebooks(model)[0].embed, step.rvq.embed[0])


# ----------------------------------------------------------------------------------------------- command line


def test_save_then_run_prints_one_json_line(tmp_path):
    weights = tmp_path / "encodec_tiny.safetensors"
    script = str(ROOT / "scripts/torch_peers")
    saved = subprocess.run([sys.executable, script, "save", "--peer", "encodec", "--config", TINY, "--seed", "0",
                            "-o", str(weights)], capture_output=True, text=True, check=True)
    info = json.loads(saved.stdout.strip().splitlines()[-1])
    assert info["params"] == tp.count_parameters(tp.build_peer("encodec", TINY, 0)) and weights.is_file()

    ran = subprocess.run([sys.executable, script, "run", "--peer", "encodec", "--config", TINY, "--weights",
                          str(weights), "--case", "encode", "--batch", "2", "--seconds", "0.5", "--mode", "eager",
                          "--iters", "1", "--threads", "1"], capture_output=True, text=True, check=True)
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert {k: result[k] for k in ("peer", "case", "mode", "batch", "seconds", "torch_threads")} == {
        "peer": "encodec", "case": "encode", "mode": "eager", "batch": 2, "seconds": 0.5, "torch_threads": 1}
    assert len(result["times"]) == 1 and result["median"] == result["times"][0] > 0
    assert result["warmup_seconds"] > 0 and result["peak_rss_mb"] > 0
    assert result["torch_version"] == torch.__version__ and "error" not in result


def test_the_module_never_imports_jax():
    code = "import sys, scripts.torch_peers; assert 'jax' not in sys.modules, 'jax was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_failing_compile_is_reported_in_the_json_line(tmp_path, monkeypatch, capsys):
    weights = tmp_path / "encodec_tiny.safetensors"
    tp.save_weights(tp.build_peer("encodec", TINY, 0), weights)

    def broken_compile(fn, **kwargs):
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(tp.torch, "compile", broken_compile)
    monkeypatch.setattr(tp.cases, "configure_dynamo", lambda: None)  # leave torch's global dynamo settings alone
    threads = torch.get_num_threads()
    try:
        assert tp.main(["run", "--peer", "encodec", "--config", TINY, "--weights", str(weights), "--case", "encode",
                        "--batch", "1", "--seconds", "0.5", "--mode", "compile", "--iters", "2",
                        "--threads", str(threads)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["error"] == "RuntimeError: backend exploded"
    assert result["times"] == [] and result["median"] is None and result["mode"] == "compile"
