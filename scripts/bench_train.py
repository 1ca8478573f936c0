"""Benchmark (not a test): train-step time, audio-seconds per second and compile time of the full GAN step
(`jaxcodec.train.step`: generator forward/backward, discriminator update, EMA codebooks) for configs × device
counts on this machine. Each case runs in its own process (the fake-device count is fixed when jax starts);
batches are synthetic (the step's cost does not depend on the audio).

    .venv/bin/python scripts/bench_train.py [--configs configs/tiny.yaml configs/base.yaml] [--devices 1 8]
                                            [--batch 8] [--steps 5]

Prints a markdown table and writes bench/results/train.json. On this 2-core CPU, 8 fake devices share the same
two cores: that row measures the cost of the sharded program (collectives, partitioning), not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(config_path: str, batch_size: int, steps: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    from jaxcodec import config as config_lib
    from jaxcodec.data import shards
    from jaxcodec.train import sharding
    from jaxcodec.train import state as state_lib
    from jaxcodec.train import step as step_lib

    config = config_lib.load(config_path, [f"train.batch_size={batch_size}", "train.disc_warmup_steps=0"])
    mesh = sharding.make_mesh(config.mesh)
    samples = int(config.data.segment_seconds * config.model.frame_rate) * config.model.hop_length
    frames = samples // config.model.hop_length
    rng = np.random.default_rng(0)
    batch = {"wav": (0.1 * rng.standard_normal((batch_size, samples))).astype(np.float32),
             "mask": np.ones((batch_size, samples), np.float32),
             shards.CONTENT: rng.standard_normal((batch_size, frames, config.model.semantic_dim)).astype(np.float16),
             shards.SPEAKER_EMBEDDING: rng.standard_normal((batch_size, config.model.acoustic_dim)).astype(np.float16)}
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(config.mesh))
    batch = jax.device_put(batch, batch_sharding)
    start = time.perf_counter()
    graphs, state, shardings = state_lib.create(config, mesh)
    jax.block_until_ready(state)
    create_seconds = time.perf_counter() - start
    step_fn = step_lib.jit_step(graphs, config, shardings, batch_sharding)
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    times = []
    for _ in range(steps + 1):  # the first call pays one-off allocations
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_seconds = statistics.median(times[1:])
    return {"config": config_path, "devices": jax.device_count(), "batch": batch_size,
            "segment_seconds": samples / config.model.sample_rate, "create_seconds": round(create_seconds, 2),
            "compile_seconds": round(compile_seconds, 2), "step_seconds": [round(t, 4) for t in times[1:]],
            "median_step_seconds": round(step_seconds, 4),
            "audio_seconds_per_second": round(batch_size * samples / config.model.sample_rate / step_seconds, 3),
            "flops_per_step": float(cost.get("flops", 0.0)) if cost else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["configs/tiny.yaml", "configs/base.yaml"])
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--batch", type=int, default=8, help="global batch (the paper's 64 is GPU-sized)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train.json")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return 0
    rows = []
    for config_path in args.configs:
        for devices in args.devices:
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                       JAX_PLATFORMS="cpu")
            done = subprocess.run([sys.executable, __file__, "--child", config_path, str(args.batch),
                                   str(args.steps)], env=env, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done: {config_path} on {devices} devices", file=sys.stderr, flush=True)
    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "load_average": os.getloadavg()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| config | devices | batch × s | compile s | init s | step s (median) | audio-s / s | GFLOP / step |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        flops = f"{r['flops_per_step'] / 1e9:.1f}" if r["flops_per_step"] else "—"
        print(f"| {r['config']} | {r['devices']} | {r['batch']} × {r['segment_seconds']:.2f} | "
              f"{r['compile_seconds']:.1f} | {r['create_seconds']:.1f} | {r['median_step_seconds']:.3f} | "
              f"{r['audio_seconds_per_second']:.2f} | {flops} |")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
