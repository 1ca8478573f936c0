"""Benchmark (not a test): the running memory and step time of the GAN step under each `train.remat` setting.

    .venv/bin/python scripts/memory_remat.py [--config configs/base.yaml] [--batches 4 16 64] [--time-batch 4]
        [--settings none/nothing both/dots ...]

For every setting (none, seanet, disc, both; the rematerialised ones under each `train.remat_policy`) and batch
of 1 s crops: the compiled GAN step's running memory from XLA's buffer assignment (`jaxcodec.commands.bench
.running_memory_mb`: arguments + temporaries + outputs not written over donated arguments), and how many
convolutions the lowered program holds against the compiled one (rematerialisation adds forward convolutions to
the lowered program; a backend that keeps them recomputes). At `--time-batch` it also times 3 steps. Each setting
runs in its own process. Prints a markdown table and writes bench/results/remat-<config>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = [("none", "nothing"), ("seanet", "nothing"), ("seanet", "dots"), ("disc", "nothing"), ("disc", "dots"),
            ("both", "nothing"), ("both", "dots")]
TIMED_STEPS = 3
CONVOLUTION = re.compile(r"= [^ ]+ convolution\(")


def measure(config_path: str, remat: str, policy: str, batch: int, timed: bool) -> dict:
    import jax

    from jaxcodec.commands import bench

    overrides = [f"train.remat={remat}", f"train.remat_policy={policy}"]
    config = bench.case_config(config_path, overrides, "gan_step", batch)
    jitted, args, advance = bench.prepare_jax_case(config, "gan_step", batch, 1.0)
    lowered = jitted.lower(*args)
    lowered_convs = len(CONVOLUTION.findall(lowered.as_text(dialect="hlo")))
    compiled = lowered.compile()
    row = {"remat": remat, "policy": policy, "batch": batch, **bench.running_memory_mb(compiled),
           "lowered_convolutions": lowered_convs, "compiled_convolutions": len(CONVOLUTION.findall(compiled.as_text()))}
    if timed:
        times = []
        args, out = advance(compiled, args)
        jax.block_until_ready(out)
        for _ in range(TIMED_STEPS):
            start = time.perf_counter()
            args, out = advance(compiled, args)
            jax.block_until_ready(out)
            times.append(time.perf_counter() - start)
        row["step_seconds"] = statistics.median(times)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/base.yaml")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--time-batch", type=int, default=4)
    parser.add_argument("--settings", nargs="+", metavar="REMAT/POLICY",
                        default=[f"{remat}/{policy}" for remat, policy in SETTINGS])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--one", nargs=3, metavar=("REMAT", "POLICY", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process: one measurement, as JSON on the last line
        remat, policy, batch = args.one[0], args.one[1], int(args.one[2])
        print(json.dumps(measure(args.config, remat, policy, batch, batch == args.time_batch)))
        return 0

    rows = []
    for remat, policy in (setting.split("/") for setting in args.settings):
        for batch in args.batches:
            done = subprocess.run([sys.executable, __file__, "--config", args.config, "--time-batch",
                                   str(args.time_batch), "--one", remat, policy, str(batch)],
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"{remat}/{policy} at {batch}: {done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr, flush=True)
    lines = [f"GAN step of `{args.config}` per `train.remat` setting (1 s crops; memory from XLA's buffer "
             f"assignment; step time median of {TIMED_STEPS} at batch {args.time_batch})", "",
             "| remat / policy | batch | running MB (state + transient) | convolutions lowered → compiled | step s |",
             "|---|---|---|---|---|"]
    for row in rows:
        step = f"{row['step_seconds']:.2f}" if "step_seconds" in row else ""
        lines.append(f"| {row['remat']} / {row['policy']} | {row['batch']} | {row['running_mb']:.0f} "
                     f"({row['state_mb']:.0f} + {row['transient_mb']:.0f}) | {row['lowered_convolutions']} → "
                     f"{row['compiled_convolutions']} | {step} |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"remat-{Path(args.config).stem}.json"
    out.write_text(json.dumps({"config": args.config, "rows": rows, "table": table}, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
