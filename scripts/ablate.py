"""The paper's ablation: the same codec trained four ways with the same budget on the same data, each evaluated
with `jaxcodec eval`, and one comparison report.

    .venv/bin/python scripts/ablate.py --data SHARDS --manifest MANIFEST --out DIR [--config configs/tiny.yaml]
        [--steps 300] [--minutes-per-run M] [--n-q 1,8] [--labels speakers.json] [--set key=value ...]

Variants (the paper's first three experiments and the full model):
  recon-only   λ_semantic = 0, λ_acoustic = 0   (an EnCodec)
  semantic     λ_acoustic = 0                   (HuBERT guidance of level 1 only)
  acoustic     λ_semantic = 0                   (ECAPA guidance of levels 2..n_q only)
  full         both, as configured              (the paper's model)

Each run trains `--steps` steps (the budget: same steps, same batches, same seed; `--minutes-per-run` is a guard
that stops a run early and is reported if it does). Runs and evaluations resume: a finished workdir or report is
reused. Writes DIR/<variant>/workdir, DIR/<variant>/eval (report.md, metrics.json), and DIR/ablation.md with
DIR/compare_curves.png. The teachers' dimensions come from the shards' provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "recon-only": ["loss.lambda_semantic=0", "loss.lambda_acoustic=0"],
    "semantic": ["loss.lambda_acoustic=0"],
    "acoustic": ["loss.lambda_semantic=0"],
    "full": [],
}


def variant_config(config_path: Path, shards: Path, steps: int, overrides: list[str], variant: str):
    from jaxcodec import config as config_lib

    provenance = json.loads((shards / "index.json").read_text())["provenance"]
    every = max(min(100, steps), 1)
    return config_lib.load(config_path, [
        f"model.semantic_dim={provenance['hubert']['dim']}", f"model.acoustic_dim={provenance['ecapa']['dim']}",
        f"data.hubert_layer={provenance['hubert']['layer']}", f"train.num_steps={steps}",
        f"train.eval_every={every}", f"train.checkpoint_every={every}", *overrides, *VARIANTS[variant]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="shard directory (jaxcodec precompute)")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest with the test split")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--minutes-per-run", type=float, default=None, help="stop a run early after this long")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--n-q", default=None, help="bitrates to evaluate (jaxcodec eval --n-q; default: all)")
    parser.add_argument("--labels", type=Path, help="per-speaker labels for the probes (jaxcodec eval --labels)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from jaxcodec.eval import evaluate, report
    from jaxcodec.train import loop

    timings = {}
    for variant in args.variants:
        run_dir = args.out / variant
        config = variant_config(args.config, args.data, args.steps, args.overrides, variant)
        started = time.monotonic()
        print(f"[ablate] {variant}: training {args.steps} steps ({' '.join(VARIANTS[variant]) or 'as configured'})",
              flush=True)
        budget = None if args.minutes_per_run is None else args.minutes_per_run * 60
        last = loop.train(config, args.data, run_dir / "workdir", log=lambda m: print(f"  {m}", flush=True),
                          time_budget=budget)
        timings[variant] = {"training_seconds": round(time.monotonic() - started, 1),
                            "stopped_early": bool(last.get("stopped_early"))}
        eval_dir = run_dir / "eval"
        if not (eval_dir / "metrics.json").exists():
            options = evaluate.Options(checkpoint=run_dir / "workdir", manifest=args.manifest, out=eval_dir,
                                       n_q=args.n_q, labels=args.labels)
            report.render(eval_dir, evaluate.evaluate(options))
    table = report.compare([args.out / v / "eval" for v in args.variants], args.out, names=args.variants)
    lines = ["# Ablation", "", f"Config `{args.config}`, {args.steps} steps per variant, data `{args.data}`.", "",
             table, "![curves](compare_curves.png)", "", "| variant | training seconds | stopped early |",
             "|---|---|---|",
             *[f"| {v} | {t['training_seconds']} | {t['stopped_early']} |" for v, t in timings.items()]]
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    print(table, end="")
    print(f"[ablate] comparison: {args.out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
