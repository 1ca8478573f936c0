"""Overlaid validation curves of several training runs, by wall-clock time and by step, and one table row per run,
for bench/learning.md (the record of CPU recipes: which one learns fastest per minute).

    .venv/bin/python scripts/learning_curves.py --run NAME=WORKDIR[,EVAL_DIR] [--run ...] \
        --out bench/results/learning.png [--json bench/results/learning.json]

A run's wall-clock axis is its training rows' `elapsed` (seconds since the loop's first step, as logged), mapped
onto its validation steps; EVAL_DIR (a `jaxcodec eval` report folder) adds the test-set scores at full bitrate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxcodec.workdir import read_metrics

CURVES = (("valid_mel", "validation mel loss ↓"), ("valid_pesq", "validation PESQ-wb ↑"),
          ("valid_stoi", "validation STOI ↑"))
TEST_METRICS = ("pesq", "stoi", "mel_distance")


def read_run(workdir: Path) -> dict:
    rows = read_metrics(workdir)
    train = [r for r in rows if "elapsed" in r]
    valid = [r for r in rows if "valid_mel" in r]
    steps, elapsed = [r["step"] for r in train], [r["elapsed"] for r in train]
    for row in valid:  # validation after step s follows training row s - 1
        row["minutes"] = float(np.interp(row["step"] - 1, steps, elapsed)) / 60 if steps else 0.0
    return {"valid": valid, "steps": max([s + 1 for s in steps[-1:]] + [r["step"] for r in valid[-1:]] + [0]),
            "train_minutes": (elapsed[-1] / 60) if elapsed else 0.0}


def read_eval(directory: Path) -> dict:
    full = json.loads((directory / "metrics.json").read_text())["bitrates"][-1]
    return {key: full.get(key) for key in TEST_METRICS}


def plot(runs: dict[str, dict], path: Path) -> Path:
    from jaxcodec.eval.report import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(2, len(CURVES), figsize=(15, 7))
    for name, run in runs.items():
        for column, (key, label) in enumerate(CURVES):
            points = [r for r in run["valid"] if key in r]
            for row, x_key, x_label in ((0, "minutes", "training minutes"), (1, "step", "step")):
                ax = axes[row][column]
                ax.plot([p[x_key] for p in points], [p[key] for p in points], "o-", markersize=2, label=name)
                ax.set_xlabel(x_label)
                if key == "valid_mel":
                    ax.set_yscale("log")  # step 0 (untrained) sits 25× above the rest
                ax.set_title(label)
                ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def table(runs: dict[str, dict]) -> str:
    lines = ["| run | steps | training min | best valid mel (step) | last valid PESQ / STOI | test PESQ-wb | "
             "test STOI | test mel distance |", "|---|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        best = min(run["valid"], key=lambda r: r["valid_mel"]) if run["valid"] else None
        last = run["valid"][-1] if run["valid"] else {}
        test = run.get("test") or {}

        def fmt(value, pattern="{:.3f}"):
            return "—" if value is None else pattern.format(value)

        lines.append(f"| {name} | {run['steps']} | {run['train_minutes']:.1f} | "
                     f"{fmt(best and best['valid_mel'])} ({best['step'] if best else '—'}) | "
                     f"{fmt(last.get('valid_pesq'))} / {fmt(last.get('valid_stoi'))} | {fmt(test.get('pesq'))} | "
                     f"{fmt(test.get('stoi'))} | {fmt(test.get('mel_distance'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=WORKDIR[,EVAL_DIR]")
    parser.add_argument("--out", type=Path, required=True, help="the overlaid plot (PNG)")
    parser.add_argument("--json", type=Path, help="also save every run's curve and scores here")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, _, paths = spec.partition("=")
        workdir, _, eval_dir = paths.partition(",")
        if not name or not workdir:
            parser.error(f"--run {spec!r}: expected NAME=WORKDIR[,EVAL_DIR]")
        runs[name] = read_run(Path(workdir))
        if eval_dir:
            runs[name]["test"] = read_eval(Path(eval_dir))
    plot(runs, args.out)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    print(table(runs), end="")
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
