"""Benchmark (not a test): how long `jaxcodec train` takes to reach its first step, cold and resumed.

    .venv/bin/python scripts/bench_startup.py [--config configs/base.yaml] [--batch 4] [--rounds 2]

Each round, in a fresh folder with a fresh compilation cache, one command (a long run, checkpointed every step):
1. cold: a new run (initialisation, k-means, compiling the step), killed once its first checkpoint is on disk
   (an interrupted run);
2. resumed, cache warm: the same command again, with the compilation cache the cold run filled (what a user's
   rerun gets by default), killed after its first step;
3. resumed, cache empty: as 2 on a copy of the workdir with the cache turned off, to separate the cache from the
   restore.
Time to first step = from launching the process to its "first step done" line (interpreter start, imports,
restore or initialisation, compilation or cache load, the step). Data: synthetic shards with the config's teacher
dimensions (scripts/synthetic_shards.py). Prints a table and writes bench/results/startup-<config>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIRST_STEP = re.compile(r"first step done ([0-9.]+) s after start")
CHECKPOINT_WAIT_SECONDS = 120  # the cold run's step-1 checkpoint is written asynchronously after its first step
LONG_RUN_STEPS = 1000  # the command's num_steps: the runs are killed long before, as an interrupted run would be


def time_to_first_step(command: list[str], env: dict, wait_for: Path | None = None) -> dict:
    """Seconds from launch to the 'first step done' line, and the loop's own figure from train() entry. Then
    kills the run, once `wait_for` (the first checkpoint) exists if given."""
    start = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    launch_to_first, in_loop, tail = None, None, []
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        match = FIRST_STEP.search(line)
        if match:
            launch_to_first, in_loop = time.monotonic() - start, float(match.group(1))
            break
    deadline = time.monotonic() + CHECKPOINT_WAIT_SECONDS
    while wait_for is not None and not wait_for.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if wait_for is not None:
        time.sleep(1)  # margin for orbax's bookkeeping after the rename that makes the step visible
    proc.kill()
    proc.wait()
    if launch_to_first is None or (wait_for is not None and not wait_for.is_dir()):
        raise SystemExit(f"train failed ({proc.returncode}):\n{''.join(tail)}")
    return {"seconds": launch_to_first, "loop_seconds": in_loop}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/base.yaml")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from jaxcodec import config as config_lib
    from scripts.synthetic_shards import write_synthetic_shards

    config = config_lib.load(args.config)
    results: dict[str, list] = {"cold": [], "resumed, cache warm": [], "resumed, cache empty": []}
    with tempfile.TemporaryDirectory(prefix="jaxcodec-startup-") as tmp:
        data = write_synthetic_shards(Path(tmp) / "shards", config.model.semantic_dim, config.model.acoustic_dim,
                                      utterances=2 * args.batch + 8)
        for round_index in range(args.rounds):
            folder = Path(tmp) / f"round{round_index}"
            env = dict(os.environ, JAXCODEC_COMPILE_CACHE=str(folder / "cache"), JAX_PLATFORMS="cpu")
            env.pop("JAX_COMPILATION_CACHE_DIR", None)

            def train(workdir: str, folder=folder) -> list[str]:
                return [sys.executable, "-m", "jaxcodec", "train", "--config", args.config, "--data", str(data),
                        "--workdir", str(folder / workdir), "--set", f"train.batch_size={args.batch}",
                        "--set", f"train.num_steps={LONG_RUN_STEPS}", "--set", "train.checkpoint_every=1",
                        "--set", "train.eval_every=0"]

            results["cold"].append(time_to_first_step(train("run"), env, folder / "run" / "checkpoints" / "1"))
            # Two copies of the interrupted workdir: one resumed with the filled cache, one without any cache.
            subprocess.run(["cp", "-r", str(folder / "run"), str(folder / "run_nocache")], check=True)
            results["resumed, cache warm"].append(time_to_first_step(train("run"), env))
            results["resumed, cache empty"].append(
                time_to_first_step(train("run_nocache"), {**env, "JAXCODEC_COMPILE_CACHE": "off"}))
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in results.items()),
                  file=sys.stderr, flush=True)
    cold = statistics.median(r["seconds"] for r in results["cold"])
    lines = [f"`jaxcodec train --config {args.config}` at batch {args.batch}: time from launch to the first step "
             f"(median of {args.rounds} rounds)", "", "| start | seconds (median) | all rounds | vs cold |",
             "|---|---|---|---|"]
    for name, runs in results.items():
        median = statistics.median(r["seconds"] for r in runs)
        rounds = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        lines.append(f"| {name} | {median:.1f} | {rounds} | {cold / median:.1f}× sooner |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"startup-{Path(args.config).stem}.json"
    out.write_text(json.dumps({"config": args.config, "batch": args.batch, "runs": results, "table": table},
                              indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
