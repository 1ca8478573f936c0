"""What the training loop watches in every step's metrics, beyond non-finite values (the step skips those):

- `FloorMonitor`: a guidance loss that sits at its floor (what a constant student reaches: `loss/semantic_floor`,
  `loss/acoustic_floor`, train/step.py) teaches nothing, however small its value. After `train.floor_check_after`
  steps, a guidance loss that is not below FLOOR_RATIO × its floor at any step of a whole log interval gets one
  warning line naming the loss, its floor and the settings to look at (once per loss per run).
- `DivergenceMonitor`: a run whose loss or gradient norm grows by orders of magnitude is diverging, and every
  step after that trains a worse model. Each watched metric's reference is the lowest median of a complete log
  interval so far (after the learning-rate warm-up); a value at `train.divergence_factor` × its reference stops
  the run. The onset is the first step of the current stretch at ONSET_FACTOR × the reference or more: checkpoints
  saved from there on are not good ones (the loop sets them aside).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxcodec.config import Config

GUIDANCE = ("semantic", "acoustic")  # the guidance losses, each logged beside its floor
LAST_INTERVALS = 5  # the log steps at the end of a run whose loss-to-floor ratio `guidance_summary` reports
FLOOR_RATIO = 0.95  # "within 5 % of its floor" (or above it): a guidance loss that has not left its floor
WATCHED = ("loss/total", "grad_norm/generator")  # what grows by orders of magnitude in a diverging run
ONSET_FACTOR = 10.0  # one order of magnitude over the reference: where a divergence is taken to have begun

# The settings a guidance loss at its floor points to.
FLOOR_ADVICE = {
    "semantic": "loss.semantic_axis (a phone posteriorgram needs `time`), loss.lambda_semantic and the content "
                "teacher (`jaxcodec shards info`)",
    "acoustic": "the speaker teacher's calibration (`jaxcodec shards info`; `jaxcodec shards calibrate` for a set "
                "without one), loss.acoustic_temperature and loss.lambda_acoustic",
}


class FloorMonitor:
    """Warns once per guidance loss that stays at its floor for a whole log interval after the check starts."""

    def __init__(self, config: Config):
        lc, tc = config.loss, config.train
        self.names = [name for name, weight in (("semantic", lc.lambda_semantic), ("acoustic", lc.lambda_acoustic))
                      if weight > 0]
        self.check_after, self.interval = tc.floor_check_after, tc.log_every
        self.at_floor = {name: True for name in self.names}  # so far in the current interval
        self.warned: set[str] = set()

    def observe(self, step: int, row: dict) -> list[str]:
        """Feeds one step's metrics; returns the warning lines due (at the last step of a log interval)."""
        for name in self.names:
            loss, floor = row.get(f"loss/{name}"), row.get(f"loss/{name}_floor")
            if loss is None or floor is None or not (math.isfinite(loss) and math.isfinite(floor)):
                continue
            self.at_floor[name] &= loss >= FLOOR_RATIO * floor
        if (step + 1) % self.interval:
            return []
        lines = []
        first = step + 1 - self.interval
        for name in self.names:
            if self.at_floor[name] and first >= self.check_after and name not in self.warned:
                self.warned.add(name)
                lines.append(f"warning: loss/{name} ({row[f'loss/{name}']:.4g}) was not below {FLOOR_RATIO:.0%} of "
                             f"its floor ({row[f'loss/{name}_floor']:.4g}, what a constant output reaches) at any "
                             f"step of {first}-{step}: the {name} guidance teaches nothing; look at "
                             f"{FLOOR_ADVICE[name]}")
            self.at_floor[name] = True
        return lines


@dataclasses.dataclass(frozen=True)
class Divergence:
    metric: str
    step: int
    value: float
    reference: float  # the lowest median of a complete log interval
    reference_steps: tuple[int, int]  # that interval
    onset: int  # first step of the stretch at ONSET_FACTOR × reference or more

    def message(self, factor: float) -> str:
        return (f"training diverged: {self.metric} reached {self.value:.4g} at step {self.step}, "
                f"{self.value / self.reference:.3g}× its lowest log-interval median ({self.reference:.4g}, steps "
                f"{self.reference_steps[0]}-{self.reference_steps[1]}; the limit is train.divergence_factor = "
                f"{factor:g}×), growing since step {self.onset}")


@dataclasses.dataclass
class _Watch:
    reference: float = math.inf
    reference_steps: tuple[int, int] = (0, 0)
    window: list[float] = dataclasses.field(default_factory=list)
    window_start: int | None = None
    onset: int | None = None


class DivergenceMonitor:
    """Stops a run whose WATCHED metrics reach `factor` × their reference (module docstring)."""

    def __init__(self, config: Config):
        self.factor = config.train.divergence_factor
        self.interval = config.train.log_every
        self.start_after = config.optim.warmup_steps  # the warm-up's first steps are not a reference
        self.watches = {name: _Watch() for name in WATCHED}
        self.adversarial: float | None = None

    def observe(self, step: int, row: dict) -> Divergence | None:
        if row.get("adversarial_on") != self.adversarial:  # the discriminators switched on: another loss sum
            self.adversarial = row.get("adversarial_on")
            self.watches = {name: _Watch() for name in WATCHED}
        if self.factor <= 0 or step < self.start_after:
            return None
        for name, watch in self.watches.items():
            value = row.get(name)
            if value is None or not math.isfinite(value):
                continue
            if watch.reference < math.inf:
                if value >= ONSET_FACTOR * watch.reference:
                    watch.onset = step if watch.onset is None else watch.onset
                else:
                    watch.onset = None
                if value >= self.factor * watch.reference:
                    return Divergence(name, step, float(value), watch.reference, watch.reference_steps,
                                      watch.onset if watch.onset is not None else step)
            if watch.window_start is None:
                watch.window_start = step
            watch.window.append(float(value))
            if len(watch.window) == self.interval:
                median = float(np.median(watch.window))
                if median < watch.reference and median > 0:
                    watch.reference, watch.reference_steps = median, (watch.window_start, step)
                watch.window, watch.window_start = [], None
        return None


def guidance_summary(rows: list[dict]) -> dict:
    """After a run, from its metrics.jsonl rows: per guidance loss, the median of its floor over the logged steps
    and the mean loss / floor over the last LAST_INTERVALS logged steps (below 1: it learned more than a constant
    output), with the warnings and the divergence the run logged."""
    train = [r for r in rows if "loss/total" in r and "loss/acoustic_floor" in r]
    summary: dict = {"warnings": [r["warning"] for r in rows if "warning" in r],
                     "diverged": next((r["diverged"] for r in rows if "diverged" in r), None)}
    last = train[-LAST_INTERVALS:]
    for name in GUIDANCE:
        floors = [r[f"loss/{name}_floor"] for r in train]
        summary[name] = {
            "median_floor": float(np.median(floors)) if floors else None,
            "last_ratio": float(np.mean([r[f"loss/{name}"] / r[f"loss/{name}_floor"] for r in last])) if last else None,
            "last_loss": float(np.mean([r[f"loss/{name}"] for r in last])) if last else None,
            "last_floor": float(np.mean([r[f"loss/{name}_floor"] for r in last])) if last else None,
        }
    return summary
