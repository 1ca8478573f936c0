"""The paper's ablation: the same codec trained four ways with the same budget on the same data, each evaluated
with `jaxcodec eval`, repeated over seeds, and one comparison report with mean ± standard deviation.

    .venv/bin/python scripts/ablate.py --data SHARDS --manifest MANIFEST --out DIR [--config configs/cpu.yaml]
        [--steps 300] [--seeds 3] [--minutes-per-run M] [--n-q 1,8] [--labels speakers.json] [--no-vc]
        [--asr none] [--speaker-encoder none] [--set key=value ...]

Variants (the paper's first three experiments, the full model, and the acoustic guidance as it was before the
speaker teacher was calibrated):
  recon-only             λ_semantic = 0, λ_acoustic = 0   (an EnCodec)
  semantic               λ_acoustic = 0                   (content-teacher guidance of level 1 only)
  acoustic               λ_semantic = 0                   (speaker-teacher guidance of levels 2..n_q only)
  full                   both, as configured              (the paper's model)
  acoustic-uncalibrated  acoustic, on the raw teacher at τ = 1 (loss.acoustic_standardize=false,
                         loss.acoustic_temperature=1: the paper's setting, the KL before calibration)

Each run trains `--steps` steps (the budget: same steps, same batches, same seed across variants; seed s sets
train.seed and data.shuffle_seed, so seeds differ in initialisation and batch order; `--minutes-per-run` is a
guard that stops a run early and is reported if it does). Runs and evaluations resume: a finished workdir or
report is reused. Writes DIR/<variant>/seed<s>/{workdir,eval}, and DIR/ablation.md: per metric and probe, the
mean ± standard deviation over seeds (ddof 1), and each semantic- or acoustic-guided variant's difference from
recon-only in units of the larger of the two standard deviations; DIR/ablation.json holds every value:
{"variants": {NAME: {METRIC: [one value per seed]}}}, METRIC named as the rows of ablation.md. Besides the
evaluation's metrics, each run's guidance losses beside their floors (train/monitor.py's guidance_summary: loss /
floor over the last log steps) are rows too. The teachers' dimensions come from the shards' provenance; the
content teacher (HuBERT, or PocketSphinx phones offline) is named in the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxcodec.workdir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "recon-only": ["loss.lambda_semantic=0", "loss.lambda_acoustic=0"],
    "semantic": ["loss.lambda_acoustic=0"],
    "acoustic": ["loss.lambda_semantic=0"],
    "full": [],
    "acoustic-uncalibrated": ["loss.lambda_semantic=0", "loss.acoustic_standardize=false",
                              "loss.acoustic_temperature=1"],
}


def variant_config(config_path: Path, shards: Path, steps: int, overrides: list[str], variant: str, seed: int = 0):
    from jaxcodec import config as config_lib
    from jaxcodec.data.shards import config_overrides

    provenance = json.loads((shards / "index.json").read_text())["provenance"]
    every = max(min(config_lib.load(config_path).train.eval_every, steps), 1)
    return config_lib.load(config_path, [
        *config_overrides(provenance), f"train.num_steps={steps}",
        f"train.eval_every={every}", f"train.checkpoint_every={every}", f"train.seed={seed}",
        f"data.shuffle_seed={seed}", *overrides, *VARIANTS[variant]])


def guidance_rows(rows: dict[str, dict[str, list[float]]], variant: str, workdir: Path) -> None:
    """Adds a run's guidance losses beside their floors (loss / floor at the end of training) to `rows`."""
    from jaxcodec.train import monitor

    metrics = read_metrics(workdir)
    summary = monitor.guidance_summary(metrics)
    for name in monitor.GUIDANCE:
        ratio = summary[name]["last_ratio"]
        if ratio is not None:
            rows.setdefault(f"{name} loss / its floor, last {monitor.LAST_INTERVALS} log steps ↓", {}) \
                .setdefault(variant, []).append(ratio)


def summary_rows(results: dict[str, list[dict]]) -> dict[str, dict[str, list[float]]]:
    """{row name: {variant: values over seeds}} from each run's metrics.json: full-bitrate metrics, WER and PER of
    level 1 alone (report.LEVEL_ONE_METRICS), VC and every probe of report.PROBE_ROWS per level group."""
    from jaxcodec.eval import report

    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, variant: str, value) -> None:
        if value is not None:
            rows.setdefault(name, {}).setdefault(variant, []).append(float(value))

    for variant, runs in results.items():
        for result in runs:
            for key, label, _, up in report.BITRATE_METRICS:
                add(f"{label} {'↑' if up else '↓'}", variant, result["bitrates"][-1].get(key))
            for key, label, _, up in report.LEVEL_ONE_METRICS:  # content at n_q = 1: level 1's own share
                add(f"{label}, level 1 only {'↑' if up else '↓'}", variant, report.level_one_row(result).get(key))
            for key, label, _ in report.VC_METRICS:
                add(f"VC: {label}", variant, (result.get("voice_conversion") or {}).get(key))
            for probe in report.PROBE_ROWS:
                for group, probe_result in (report.probe_table(result, probe) or {}).items():
                    add(f"probe: {probe}, {group} ↑", variant, probe_result and probe_result["accuracy"])
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summary_table(rows: dict[str, dict[str, list[float]]], variants: list[str]) -> str:
    """Mean ± sd per variant, and each guided variant's distance from recon-only in units of the larger sd."""
    guided = [v for v in variants if v != "recon-only"]
    lines = ["| metric | " + " | ".join(variants) + " | " + " | ".join(f"{v} − recon-only (sd)" for v in guided)
             + " |", "|---" * (1 + len(variants) + len(guided)) + "|"]
    for name, by_variant in rows.items():
        cells = []
        for variant in variants:
            values = by_variant.get(variant)
            cells.append("—" if not values else "{:.3f} ± {:.3f}".format(*mean_std(values)))
        base = by_variant.get("recon-only")
        for variant in guided:
            values = by_variant.get(variant)
            if not values or not base:
                cells.append("—")
                continue
            (m, sd), (m0, sd0) = mean_std(values), mean_std(base)
            scale = max(sd, sd0)
            cells.append(f"{(m - m0) / scale:+.1f}" if scale > 0 else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="shard directory (jaxcodec precompute)")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest with the test split")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant, seeds 0..N-1 (default: 1)")
    parser.add_argument("--minutes-per-run", type=float, default=None, help="stop a run early after this long")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--n-q", default=None, help="bitrates to evaluate (jaxcodec eval --n-q; default: all)")
    parser.add_argument("--labels", type=Path, help="per-speaker labels for the probes (jaxcodec eval --labels)")
    parser.add_argument("--no-vc", action="store_true", help="skip voice conversion in the evaluations")
    parser.add_argument("--asr", default="pocketsphinx", help="WER recogniser of the evaluations, or none")
    parser.add_argument("--speaker-encoder", default="resemblyzer",
                        help="speaker similarity of the evaluations (jaxcodec eval --speaker-encoder), or none")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be at least 1")

    from jaxcodec.data import shards
    from jaxcodec.eval import evaluate, report
    from jaxcodec.train import loop

    timings, results = {}, {}
    for variant in args.variants:
        for seed in range(args.seeds):
            run_dir = args.out / variant / f"seed{seed}"
            config = variant_config(args.config, args.data, args.steps, args.overrides, variant, seed)
            started = time.monotonic()
            print(f"[ablate] {variant} seed {seed}: training {args.steps} steps "
                  f"({' '.join(VARIANTS[variant]) or 'as configured'})", flush=True)
            budget = None if args.minutes_per_run is None else args.minutes_per_run * 60
            last = loop.train(config, args.data, run_dir / "workdir", log=lambda m: print(f"  {m}", flush=True),
                              time_budget=budget)
            timings[f"{variant} seed {seed}"] = {"training_seconds": round(time.monotonic() - started, 1),
                                                 "stopped_early": bool(last.get("stopped_early"))}
            eval_dir = run_dir / "eval"
            if not (eval_dir / "metrics.json").exists():
                options = evaluate.Options(checkpoint=run_dir / "workdir", manifest=args.manifest, out=eval_dir,
                                           n_q=args.n_q, labels=args.labels, voice_conversion=not args.no_vc,
                                           asr=None if args.asr == "none" else args.asr,
                                           speaker_encoder=None if args.speaker_encoder == "none"
                                           else args.speaker_encoder)
                report.render(eval_dir, evaluate.evaluate(options))
            results.setdefault(variant, []).append(json.loads((eval_dir / "metrics.json").read_text()))
    rows = summary_rows(results)
    for variant in args.variants:
        for seed in range(args.seeds):
            guidance_rows(rows, variant, args.out / variant / f"seed{seed}" / "workdir")
    table = summary_table(rows, args.variants)
    by_variant = {variant: {metric: values[variant] for metric, values in rows.items() if variant in values}
                  for variant in args.variants}
    (args.out / "ablation.json").write_text(json.dumps({"variants": by_variant, "config": str(args.config),
                                                        "steps": args.steps, "seeds": args.seeds,
                                                        "data": str(args.data)}, indent=1) + "\n")
    content = shards.by_role(json.loads((args.data / "index.json").read_text())["provenance"])[shards.CONTENT]
    teacher = content.get("teacher") or content.get("random_init") or f"HuBERT {content.get('model')}"
    lines = ["# Ablation", "",
             f"Config `{args.config}`, {args.steps} steps per run, {args.seeds} seed(s) per variant, data "
             f"`{args.data}`; content teacher: {teacher}. Cells: mean ± standard deviation over seeds; the last "
             "columns: (variant − recon-only) / the larger of their standard deviations.", "", table, "",
             "| run | training seconds | stopped early |", "|---|---|---|",
             *[f"| {name} | {t['training_seconds']} | {t['stopped_early']} |" for name, t in timings.items()]]
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    print(table, end="")
    print(f"[ablate] comparison: {args.out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
