"""jaxcodec.losses against hand computations, numpy, and torch ports of the reference code (SpeechTokenizer's
distillation losses, EnCodec's Balancer)."""

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxcodec import losses, spectral
from jaxcodec.config import LossConfig

# ----- reconstruction -----


def test_l1_time_by_hand():
    x = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = jnp.array([[1.5, 2.0, 1.0], [1.0, -1.0, 4.0]])
    assert float(losses.l1_time(x, y)) == pytest.approx((0.5 + 0 + 2 + 1 + 1 + 4) / 6)
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the 4.0 error is padding
    assert float(losses.l1_time(x, y, mask)) == pytest.approx((0.5 + 0 + 2 + 1 + 1) / 5)
    with pytest.raises(ValueError):
        losses.l1_time(x, y[:, :2])


def test_mel_loss_passes_config_form_through(monkeypatch):
    calls = []
    monkeypatch.setattr(spectral, "multiscale_mel_loss", lambda *args: calls.append(args) or jnp.float32(1.5))
    x, mask = jnp.zeros((1, 8)), jnp.ones((1, 8))
    assert float(losses.mel_loss(x, x, LossConfig(mel_form="speechtokenizer"), 24_000, mask)) == 1.5
    assert calls[0][2:4] == ("speechtokenizer", 24_000) and calls[0][4] is mask


# ----- adversarial -----

REAL = [jnp.array([[0.5, 2.0], [-1.0, 1.0]]), jnp.array([0.0, 3.0, 0.2])]
FAKE = [jnp.array([[-2.0, 0.5], [0.0, -0.5]]), jnp.array([1.0, -1.5, 0.1])]


def test_hinge_losses_by_hand():
    # D_0: relu(1 - real) = [.5, 0, 2, 0] → .625; relu(1 + fake) = [0, 1.5, 1, .5] → .75.
    # D_1: relu(1 - real) = [1, 0, .8] → .6; relu(1 + fake) = [2, 0, 1.1] → 1.0333...
    d0, d1 = 0.625 + 0.75, 0.6 + 3.1 / 3
    assert float(losses.discriminator_loss(REAL, FAKE, "hinge")) == pytest.approx((d0 + d1) / 2)
    assert float(losses.discriminator_loss(REAL, FAKE, "hinge", reduction="sum")) == pytest.approx(d0 + d1)
    # G: relu(1 - fake): D_0 [3, .5, 1, 1.5] → 1.5; D_1 [0, 2.5, .9] → 3.4 / 3.
    assert float(losses.generator_adversarial_loss(FAKE, "hinge")) == pytest.approx((1.5 + 3.4 / 3) / 2)


def test_lsgan_losses_by_hand():
    # D_0: (1 - real)² = [.25, 1, 4, 0] → 1.3125; fake² = [4, .25, 0, .25] → 1.125.
    # D_1: (1 - real)² = [1, 4, .64] → 5.64/3; fake² = [1, 2.25, .01] → 3.26/3.
    d0, d1 = 1.3125 + 1.125, (5.64 + 3.26) / 3
    assert float(losses.discriminator_loss(REAL, FAKE, "lsgan")) == pytest.approx((d0 + d1) / 2)
    assert float(losses.discriminator_loss(REAL, FAKE, "lsgan", reduction="sum")) == pytest.approx(d0 + d1)
    # G: (1 - fake)²: D_0 [9, .25, 1, 2.25] → 3.125; D_1 [0, 6.25, .81] → 7.06/3.
    g = 3.125 + 7.06 / 3
    assert float(losses.generator_adversarial_loss(FAKE, "lsgan")) == pytest.approx(g / 2)
    assert float(losses.generator_adversarial_loss(FAKE, "lsgan", reduction="sum")) == pytest.approx(g)


def test_feature_matching_by_hand_and_real_is_constant():
    rng = np.random.default_rng(0)
    shapes = [[(2, 4, 3), (2, 5)], [(2, 6), (2, 3, 3), (2, 2)]]
    real = [[rng.standard_normal(s).astype(np.float32) for s in layers] for layers in shapes]
    fake = [[rng.standard_normal(s).astype(np.float32) for s in layers] for layers in shapes]
    relative = np.mean([np.mean([np.abs(r - f).mean() / np.abs(r).mean() for r, f in zip(rk, fk, strict=True)])
                        for rk, fk in zip(real, fake, strict=True)])
    pairs = [(r, f) for rk, fk in zip(real, fake, strict=True) for r, f in zip(rk, fk, strict=True)]
    hifigan = 2 * sum(np.abs(r - f).mean() for r, f in pairs)
    real_j = jax.tree.map(jnp.asarray, real)
    fake_j = jax.tree.map(jnp.asarray, fake)
    assert float(losses.feature_matching_loss(real_j, fake_j)) == pytest.approx(relative, rel=1e-5)
    assert float(losses.feature_matching_loss(real_j, fake_j, relative=False)) == pytest.approx(hifigan, rel=1e-5)
    grad_real = jax.jit(jax.grad(lambda r: losses.feature_matching_loss(r, fake_j)))(real_j)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad_real))


# ----- semantic distillation -----


def _d_axis_distill_loss(feature, target_feature):
    # speechtokenizer/trainer/loss.py, verbatim.
    n = min(feature.size(1), target_feature.size(1))
    return -torch.log(torch.sigmoid(F.cosine_similarity(feature[:, :n], target_feature[:, :n], axis=1))).mean()


def _t_axis_similarity(feature, target_feature):
    # the sim_loss term of speechtokenizer's t_axis_distill_loss.
    n = min(feature.size(1), target_feature.size(1))
    return -torch.log(torch.sigmoid(F.cosine_similarity(feature[:, :n], target_feature[:, :n], axis=-1))).mean()


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((3, 12, 16)).astype(np.float32)
    student = (0.7 * teacher[:, :10] + 0.5 * rng.standard_normal((3, 10, 16))).astype(np.float32)
    return student, teacher  # student has fewer frames, as when the codec's T and HuBERT's T differ


def test_semantic_dimension_axis_matches_speechtokenizer(features):
    student, teacher = features
    expected = float(_d_axis_distill_loss(torch.from_numpy(student), torch.from_numpy(teacher)))
    actual = float(losses.semantic_loss(jnp.asarray(student), jnp.asarray(teacher), axis="dimension"))
    assert actual == pytest.approx(expected, rel=1e-5)


def test_semantic_time_axis_matches_speechtokenizer(features):
    student, teacher = features
    expected = float(_t_axis_similarity(torch.from_numpy(student), torch.from_numpy(teacher)))
    actual = float(losses.semantic_loss(jnp.asarray(student), jnp.asarray(teacher), axis="time"))
    assert actual == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("axis,reference", [("dimension", _d_axis_distill_loss), ("time", _t_axis_similarity)])
def test_semantic_mask_equals_truncation(features, axis, reference):
    student, teacher = features
    garbage = student.copy()
    garbage[:, 7:] = 100.0  # padding frames: whatever is there must not count
    mask = np.zeros((3, 12), np.float32)
    mask[:, :7] = 1.0
    expected = float(reference(torch.from_numpy(student[:, :7]), torch.from_numpy(teacher[:, :7])))
    actual = float(losses.semantic_loss(jnp.asarray(garbage), jnp.asarray(teacher), jnp.asarray(mask), axis=axis))
    assert actual == pytest.approx(expected, rel=1e-5)


def test_semantic_gradient_finite_on_zero_student():
    teacher = jnp.ones((1, 4, 3))
    grad = jax.jit(jax.grad(lambda s: losses.semantic_loss(s, teacher)))(jnp.zeros((1, 4, 3)))
    assert bool(jnp.all(jnp.isfinite(grad)))
    # cos = 0 where the student is zero: −log σ(0) = log 2.
    assert float(losses.semantic_loss(jnp.zeros((1, 4, 3)), teacher)) == pytest.approx(np.log(2.0))


# ----- acoustic distillation -----


def test_acoustic_utterance_matches_torch_kl_div():
    rng = np.random.default_rng(0)
    student = rng.standard_normal((4, 192)).astype(np.float32)
    teacher = rng.standard_normal((4, 192)).astype(np.float32)
    for tau in (1.0, 2.0):
        # KL(p_teacher ‖ p_student) with batch mean: torch's kl_div(log q, log p, log_target=True, "batchmean").
        expected = F.kl_div(F.log_softmax(torch.from_numpy(student) / tau, -1),
                            F.log_softmax(torch.from_numpy(teacher) / tau, -1), reduction="batchmean",
                            log_target=True)
        actual = losses.acoustic_loss(jnp.asarray(student), jnp.asarray(teacher), tau)
        assert float(actual) == pytest.approx(float(expected), rel=1e-5)


def test_acoustic_frames_by_hand():
    student = np.log(np.array([[[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]]]))  # logits of known distributions
    teacher = np.log(np.array([[[0.8, 0.2], [0.9, 0.1], [0.5, 0.5]]]))

    def kl(p, q):
        return float(np.sum(p * np.log(p / q)))

    frame_kls = [kl(np.array([0.8, 0.2]), np.array([0.5, 0.5])), 0.0,
                 kl(np.array([0.5, 0.5]), np.array([0.3, 0.7]))]
    assert float(losses.acoustic_loss(jnp.asarray(student), jnp.asarray(teacher))) == pytest.approx(
        np.mean(frame_kls), rel=1e-5)
    mask = jnp.array([[1.0, 1.0, 0.0]])
    assert float(losses.acoustic_loss(jnp.asarray(student), jnp.asarray(teacher), mask_bt=mask)) == pytest.approx(
        np.mean(frame_kls[:2]), rel=1e-5)


def test_acoustic_floor_by_hand_is_the_loss_of_the_batch_mean_distribution():
    """The floor is mean_i KL(p_i ‖ p̄): what a student reaches that outputs log p̄ for every example, and no
    constant output does better (p̄ minimises the summed KL)."""
    teacher = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    p = np.exp(teacher)
    mean = p.mean(axis=0)
    by_hand = np.mean([np.sum(row * np.log(row / mean)) for row in p])
    floor = float(losses.acoustic_floor(jnp.asarray(teacher)))
    assert floor == pytest.approx(by_hand, rel=1e-5)
    constant = np.broadcast_to(np.log(mean), teacher.shape)
    assert float(losses.acoustic_loss(jnp.asarray(constant), jnp.asarray(teacher))) == pytest.approx(floor, rel=1e-5)
    for other in ([0.5, 0.3, 0.2], [1 / 3] * 3, [0.2, 0.2, 0.6]):
        student = np.broadcast_to(np.log(other), teacher.shape)
        assert float(losses.acoustic_loss(jnp.asarray(student), jnp.asarray(teacher))) > floor
    # The temperature divides the teacher as in the loss; equal teachers have a zero floor.
    assert float(losses.acoustic_floor(jnp.asarray(teacher), 2.0)) == pytest.approx(
        float(losses.acoustic_floor(jnp.asarray(teacher / 2))), rel=1e-6)
    assert float(losses.acoustic_floor(jnp.zeros((4, 5)))) == pytest.approx(0.0, abs=1e-7)


def test_acoustic_floor_of_frames_ignores_padding():
    teacher = np.log(np.array([[[0.8, 0.2], [0.5, 0.5], [0.01, 0.99]]]))  # the last frame is padding
    mask = jnp.array([[1.0, 1.0, 0.0]])
    p = np.exp(teacher[0, :2])
    mean = p.mean(axis=0)
    by_hand = np.mean([np.sum(row * np.log(row / mean)) for row in p])
    assert float(losses.acoustic_floor(jnp.asarray(teacher), mask_bt=mask)) == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("axis", ["dimension", "time"])
def test_semantic_floor_is_the_loss_of_the_batch_mean_frame(axis):
    rng = np.random.default_rng(1)
    teacher = rng.standard_normal((2, 6, 5)).astype(np.float32)
    mask = np.ones((2, 6), np.float32)
    mask[1, 4:] = 0
    mean = (teacher * mask[..., None]).sum((0, 1)) / mask.sum()
    constant = np.broadcast_to(mean, teacher.shape)
    expected = losses.semantic_loss(jnp.asarray(constant), jnp.asarray(teacher), jnp.asarray(mask), axis=axis)
    floor = losses.semantic_floor(jnp.asarray(teacher), jnp.asarray(mask), axis=axis)
    assert float(floor) == pytest.approx(float(expected), rel=1e-6)
    if axis == "time":  # by hand: −log σ(cos(mean, frame)) over the real frames
        cos = [np.dot(mean, f) / (np.linalg.norm(mean) * np.linalg.norm(f)) for f in teacher[mask > 0]]
        assert float(floor) == pytest.approx(np.mean(np.log1p(np.exp(-np.array(cos)))), rel=1e-5)


# ----- EnCodec balancer -----


class _TorchBalancer:
    """encodec/balancer.py Balancer.backward (rescale_grads=True, one worker), ported line by line."""

    def __init__(self, weights, total_norm=1.0, ema_decay=0.999, per_batch_item=True, epsilon=1e-12):
        self.weights, self.total_norm, self.per_batch_item, self.epsilon = weights, total_norm, per_batch_item, epsilon
        self.fix, self.total, self.beta = defaultdict(float), defaultdict(float), ema_decay

    def averager(self, metrics, weight=1):
        for key, value in metrics.items():
            self.total[key] = self.total[key] * self.beta + weight * float(value)
            self.fix[key] = self.fix[key] * self.beta + weight
        return {key: tot / self.fix[key] for key, tot in self.total.items()}

    def backward(self, losses_dict, input):
        norms, grads = {}, {}
        for name, loss in losses_dict.items():
            (grad,) = torch.autograd.grad(loss, [input], retain_graph=True)
            if self.per_batch_item:
                norm = grad.norm(dim=tuple(range(1, grad.dim()))).mean()
            else:
                norm = grad.norm()
            norms[name], grads[name] = norm, grad
        avg_norms = self.averager(norms)
        total_weights = sum([self.weights[k] for k in avg_norms])
        ratios = {k: w / total_weights for k, w in self.weights.items()}
        out_grad = 0
        for name, avg_norm in avg_norms.items():
            out_grad += grads[name] * (ratios[name] * self.total_norm / (self.epsilon + avg_norm))
        input.backward(out_grad)
        return avg_norms


def _three_losses_torch(x, t1, t2):
    return {"l1": F.l1_loss(x, t1), "mel": 40.0 * F.mse_loss(x, t2), "adv": (x**3).mean()}


def _three_losses_jax(x, t1, t2):
    return {"l1": jnp.mean(jnp.abs(x - t1)), "mel": 40.0 * jnp.mean((x - t2) ** 2), "adv": jnp.mean(x**3)}


_THREE_GRADS = jax.jit(jax.jacrev(_three_losses_jax))


@pytest.mark.parametrize("per_batch_item", [True, False])
def test_balancer_matches_encodec_over_three_steps(per_batch_item):
    weights = {"l1": 0.1, "mel": 2.0, "adv": 4.0}
    reference = _TorchBalancer(weights, total_norm=1.0, ema_decay=0.9, per_batch_item=per_batch_item)
    balance = jax.jit(losses.balance_gradients, static_argnames=("weights", "ema_decay", "per_batch_item"))
    state = losses.balancer_init(list(weights))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, t1, t2 = (rng.standard_normal((3, 50)) * s for s in (1.0, 1.0, 3.0))
        x_torch = torch.tensor(x, requires_grad=True)
        avg_norms = reference.backward(_three_losses_torch(x_torch, torch.tensor(t1), torch.tensor(t2)), x_torch)
        # Each scalar loss's gradient w.r.t. the waveform.
        grads = _THREE_GRADS(jnp.asarray(x, jnp.float32), t1, t2)
        combined, state, metrics = balance(grads, _FrozenDict(weights), state, ema_decay=0.9,
                                           per_batch_item=per_batch_item)
        np.testing.assert_allclose(combined, x_torch.grad.numpy(), rtol=1e-4, atol=1e-7)
        for name in weights:
            assert float(metrics[f"avg_grad_norm/{name}"]) == pytest.approx(avg_norms[name], rel=1e-5)
            assert float(state["fix"][name]) == pytest.approx(reference.fix[name], rel=1e-6)


class _FrozenDict(dict):
    # jit static arguments must be hashable.
    def __hash__(self):
        return hash(tuple(sorted(self.items())))


def test_balancer_encodec_unit_case():
    # encodec/balancer.py test(): x = 0, l1(x, 1) and 100·l1(x, −1) with equal weights balance to a zero gradient.
    state = losses.balancer_init(["1", "2"])
    grads = {"1": jnp.array([[-1.0]]), "2": jnp.array([[100.0]])}
    combined, state, metrics = losses.balance_gradients(grads, {"1": 1.0, "2": 1.0}, state)
    assert float(combined[0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics["grad_ratio/2"]) == pytest.approx(100 / 101)
    # Second step, EMA debiased: fix = 1.999; total = 0.999·1 + 1 → avg stays 1 for loss "1".
    combined, state, metrics = losses.balance_gradients({"1": jnp.array([[-1.0]]), "2": jnp.array([[50.0]])},
                                                        {"1": 1.0, "2": 1.0}, state)
    assert float(state["fix"]["1"]) == pytest.approx(1.999)
    assert float(metrics["avg_grad_norm/2"]) == pytest.approx((0.999 * 100 + 50) / 1.999, rel=1e-6)


# ----- tracing -----


def test_losses_trace_under_jit():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 64)).astype(np.float32))
    logits = [x[:, :8], x[:, 8:20]]
    fmaps = [[x[:, :4], x[:, 4:16]], [x[:, 16:40]]]
    student, teacher = x.reshape(2, 8, 8), (x**2).reshape(2, 8, 8)
    mask_bt = jnp.ones((2, 8))

    @jax.jit
    def everything(x, y):
        return jnp.stack([
            losses.l1_time(x, y, jnp.ones_like(x)),
            losses.discriminator_loss(logits, [y[:, :8], y[:, 8:20]], "hinge"),
            losses.generator_adversarial_loss([y[:, :8]], "lsgan"),
            losses.feature_matching_loss(fmaps, [[y[:, :4], y[:, 4:16]], [y[:, 16:40]]]),
            losses.semantic_loss(student, y.reshape(2, 8, 8), mask_bt, axis="time"),
            losses.acoustic_loss(student, teacher, 2.0, mask_bt),
        ])

    values = everything(x, 0.5 * x)
    assert values.shape == (6,) and values.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(values)))
    eager = [float(losses.l1_time(x, 0.5 * x)), float(losses.acoustic_loss(student, teacher, 2.0))]
    np.testing.assert_allclose([values[0], values[5]], eager, rtol=1e-5)
