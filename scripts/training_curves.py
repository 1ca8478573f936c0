"""Overlaid per-step training curves of several runs (what the logged metrics say about a run's health: latent
scale, commitment, reconstruction, codebook use, gradient norm, each guidance loss over its floor), for
bench/learning.md.

    .venv/bin/python scripts/training_curves.py --run NAME=WORKDIR [--run ...] --out bench/results/PLOT.png \
        [--json bench/results/PLOT.json] [--smooth 4]

Each panel plots every run's logged steps (metrics.jsonl rows with `loss/total`); `--smooth K` averages K logged
steps (the ratios are noisy per batch). A run stopped by the divergence check ends where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxcodec.workdir import read_metrics

# (key or ratio of two keys, title, log scale)
PANELS = (
    ("latent_rms", "encoder latent RMS", True),
    ("loss/commit", "commitment loss", True),
    ("loss/mel", "mel loss (training batch)", True),
    ("codebook/used_codes_q", "codes used per batch, fewest of any level", False),
    ("grad_norm/generator", "generator gradient norm (before clipping)", True),
    (("loss/acoustic", "loss/acoustic_floor"), "acoustic loss / its floor", False),
)


def value(row: dict, key) -> float | None:
    if isinstance(key, tuple):
        top, bottom = row.get(key[0]), row.get(key[1])
        return None if top is None or not bottom else top / bottom
    v = row.get(key)
    if isinstance(v, list):  # per-level metrics: the worst level
        return float(min(v))
    return v


def read_run(workdir: Path) -> list[dict]:
    rows = read_metrics(workdir)
    return [r for r in rows if "loss/total" in r]


def smoothed(xs: list[float], ys: list[float], k: int) -> tuple[list[float], list[float]]:
    if k <= 1 or len(ys) < k:
        return xs, ys
    kernel = np.ones(k) / k
    return list(np.convolve(xs, kernel, "valid")), list(np.convolve(ys, kernel, "valid"))


def plot(runs: dict[str, list[dict]], path: Path, smooth: int) -> dict:
    from jaxcodec.eval.report import pyplot, save_png

    plt = pyplot()
    columns = 3
    fig, axes = plt.subplots(-(-len(PANELS) // columns), columns, figsize=(15, 7.5))
    curves: dict = {}
    for ax, (key, title, log) in zip(axes.flat, PANELS, strict=False):
        for name, rows in runs.items():
            points = [(r["step"], value(r, key)) for r in rows if value(r, key) is not None]
            if not points:
                continue
            xs, ys = smoothed(*[list(t) for t in zip(*points, strict=True)], smooth)
            ax.plot(xs, ys, label=name, linewidth=1)
            curves.setdefault(name, {})[title] = {"step": xs, "value": ys}
        if isinstance(key, tuple):
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)  # the floor: a constant output
        if log:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    return curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=WORKDIR")
    parser.add_argument("--out", type=Path, required=True, help="the overlaid plot (PNG)")
    parser.add_argument("--json", type=Path, help="also save the plotted curves here")
    parser.add_argument("--smooth", type=int, default=1, help="average this many logged steps (default: 1)")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, _, workdir = spec.partition("=")
        if not name or not workdir:
            parser.error(f"--run {spec!r}: expected NAME=WORKDIR")
        runs[name] = read_run(Path(workdir))
    curves = plot(runs, args.out, args.smooth)
    if args.json:
        args.json.write_text(json.dumps(curves))
    for name, rows in runs.items():
        last = rows[-1]
        print(f"{name}: {len(rows)} logged steps to step {last['step']}; latent RMS {last.get('latent_rms')}, "
              f"commitment {last.get('loss/commit'):.4g}, mel {last.get('loss/mel'):.4g}")
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
