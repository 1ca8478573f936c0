"""What the training loop watches (jaxcodec/train/monitor.py): guidance losses at their floor and divergence, on
hand-made metric streams."""

import math

from jaxcodec.train import monitor
from tests.train.micro import micro_config


def config(**train):
    return micro_config(train={"log_every": 4, "floor_check_after": 8, "divergence_factor": 100.0, **train},
                        optim={"warmup_steps": 2})


def row(step, **values):
    return {"adversarial_on": 0.0, **values}


def test_a_guidance_loss_at_its_floor_for_a_whole_interval_is_warned_once():
    floors = monitor.FloorMonitor(config())
    lines = []
    for step in range(24):
        # The acoustic loss sits at its floor throughout; the semantic one leaves it once in every interval.
        semantic = 0.5 if step % 4 == 2 else 0.61
        lines += [(step, line) for line in floors.observe(step, {
            "loss/acoustic": 1.001, "loss/acoustic_floor": 1.0, "loss/semantic": semantic,
            "loss/semantic_floor": 0.6})]
    assert [step for step, _ in lines] == [11]  # first interval starting at floor_check_after (8-11), once
    assert "loss/acoustic (1.001)" in lines[0][1] and "its floor (1, what a constant output reaches)" in lines[0][1]
    assert "calibration" in lines[0][1] and "loss.acoustic_temperature" in lines[0][1]


def test_an_unweighted_guidance_loss_is_not_watched():
    floors = monitor.FloorMonitor(micro_config(loss={"lambda_acoustic": 0.0}, train={"log_every": 2,
                                                                                     "floor_check_after": 0}))
    assert floors.names == ["semantic"]
    lines = [line for step in range(4) for line in floors.observe(step, {
        "loss/acoustic": 1.0, "loss/acoustic_floor": 1.0, "loss/semantic": 0.1, "loss/semantic_floor": 0.6})]
    assert lines == []


def test_divergence_is_growth_over_the_lowest_interval_median():
    watch = monitor.DivergenceMonitor(config())
    values = [5.0, 5.0, 3.0, 2.0, 2.0, 1.0, 1.1, 0.9, 1.0, 1.0, 5.0, 30.0, 90.0, 101.0]
    found = None
    for step, value in enumerate(values):
        found = watch.observe(step, row(step, **{"loss/total": value, "grad_norm/generator": 1.0}))
        if found:
            break
    # Steps 0-1 are the warm-up; intervals of 4: steps 2-5 (median 2.0), 6-9 (median 1.0) → reference 1.0.
    assert found is not None and found.step == 13 and found.metric == "loss/total"
    assert found.reference == 1.0 and found.reference_steps == (6, 9)
    assert found.onset == 11  # the first step of the stretch at 10× the reference or more
    assert "100" in found.message(100.0) and "step 13" in found.message(100.0)


def test_no_divergence_when_disabled_or_when_growth_comes_back_down():
    quiet = monitor.DivergenceMonitor(config(divergence_factor=0.0))
    assert all(quiet.observe(s, row(s, **{"loss/total": 10.0 ** s})) is None for s in range(12))
    watch = monitor.DivergenceMonitor(config())
    stream = [1.0] * 8 + [20.0, 1.0, 50.0, 1.0, math.nan, 99.0]
    assert all(watch.observe(s, row(s, **{"loss/total": v})) is None for s, v in enumerate(stream))


def test_the_discriminators_switching_on_restarts_the_references():
    watch = monitor.DivergenceMonitor(config())
    for step in range(10):
        assert watch.observe(step, row(step, **{"loss/total": 0.5})) is None
    # With the GAN on, the total loss adds adversarial terms: 200× the generator-only total is not a divergence.
    for step in range(10, 20):
        assert watch.observe(step, {"adversarial_on": 1.0, "loss/total": 100.0}) is None
