"""Profile (not a test): where a compiled training step spends its time, op by op, on this machine.

    .venv/bin/python scripts/profile_step.py --case generator_step --batch 16 [--config configs/base.yaml]
    .venv/bin/python scripts/profile_step.py --case gan_step --batch 4 --top 25

Builds the same step `jaxcodec bench` times (`jaxcodec.commands.bench.prepare_jax_case`, random weights: the cost
does not depend on them), runs it under the JAX profiler and joins each executed HLO instruction with the optimised HLO
(`scripts/hlo_profile.py`): its kind (conv, conv dW = a convolution's weight gradient, dot, fft, loop,
elementwise, layout), FLOPs, achieved GFLOP/s, bytes touched and the jaxcodec source line it came from.

Prints a markdown table of the top ops and a summary by kind, and writes both with every op to
bench/results/profile-<config>-<case>-<batch>x<seconds>.json (or --out). Times are per call, summed over the
XLA CPU runtime's threads, so on 2 cores the ops' total can exceed the wall time of the step.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import hlo_profile  # noqa: E402


def summarise_by_kind(rows: list[dict]) -> list[dict]:
    kinds: dict[str, dict] = collections.defaultdict(lambda: {"seconds": 0.0, "flops": 0.0, "bytes": 0.0, "ops": 0})
    for row in rows:
        k = kinds[row["kind"]]
        k["seconds"] += row["seconds"]
        k["flops"] += row["flops"]
        k["bytes"] += row["bytes"]
        k["ops"] += 1
    return sorted(({"kind": name, **v} for name, v in kinds.items()), key=lambda r: -r["seconds"])


def markdown(rows: list[dict], kinds: list[dict], header: str, top: int) -> str:
    total = sum(r["seconds"] for r in rows)
    lines = [header, "", "| # | op | kind | ms | % | GFLOP | GFLOP/s | MB touched | shapes | source |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows[:top], 1):
        rate = f"{r['flops'] / r['seconds'] / 1e9:.0f}" if r["flops"] and r["seconds"] else ""
        star = "*" if r.get("timing") == "standalone" else ""
        lines.append(f"| {i} | {r['op']}{star} | {r['kind']} | {1e3 * r['seconds']:.1f} | "
                     f"{100 * r['seconds'] / total:.1f} | {r['flops'] / 1e9:.2f} | {rate} | {r['bytes'] / 2**20:.0f} | "
                     f"{r['shape']} | {r['source']} |")
    lines += ["", "\\* timed standalone: the CPU runtime's trace of a convolution covers only its launch.", "",
              "| kind | ops | ms | % | GFLOP | GFLOP/s |", "|---|---|---|---|---|---|"]
    for k in kinds:
        rate = f"{k['flops'] / k['seconds'] / 1e9:.0f}" if k["flops"] and k["seconds"] else ""
        lines.append(f"| {k['kind']} | {k['ops']} | {1e3 * k['seconds']:.1f} | {100 * k['seconds'] / total:.1f} | "
                     f"{k['flops'] / 1e9:.2f} | {rate} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/base.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--case", default="generator_step",
                        choices=["encode", "generator_step", "warmup_step", "gan_step"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--iters", type=int, default=3, help="profiled calls (after one untimed call)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import jax

    from jaxcodec.commands import bench

    config = bench.case_config(args.config, args.overrides, args.case, args.batch)
    jitted, state, advance = bench.prepare_jax_case(config, args.case, args.batch, args.seconds)
    compiled = jitted.lower(*state).compile()
    holder = [state]

    def call():
        holder[0], out = advance(compiled, holder[0])
        return out

    jax.block_until_ready(call())
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    rows = hlo_profile.op_table(compiled, call, args.iters)
    kinds = summarise_by_kind(rows)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    step_s = statistics.median(times)
    header = (f"`{args.config}` {' '.join(args.overrides)} {args.case} {args.batch} × {args.seconds:g} s: step "
              f"{step_s:.3f} s (median of {args.iters}, unprofiled), XLA {float(cost.get('flops', 0)) / 1e9:.1f} "
              f"GFLOP; ops' time summed over threads {sum(r['seconds'] for r in rows):.3f} s")
    table = markdown(rows, kinds, header, args.top)
    print(table)
    out = args.out or ROOT / "bench" / "results" / (
        f"profile-{Path(args.config).stem}-{args.case}-{args.batch}x{args.seconds:g}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "overrides": args.overrides, "case": args.case,
                               "batch": args.batch, "seconds": args.seconds, "step_seconds": times,
                               "xla_flops": float(cost.get("flops", 0)), "kinds": kinds, "ops": rows}, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
