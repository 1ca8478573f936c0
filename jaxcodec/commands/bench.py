"""`jaxcodec bench`: jaxcodec (jit) against its PyTorch peer (eager and `torch.compile`) on the same architecture,
the same weights and the same batch, case by case. A benchmark, never a test.

Cases (batch × seconds of 16 kHz audio):
  encode           waveform → codes (the peer's own `encode`; our `Codec.encode`), audio-seconds per second
  generator_step   encoder → RVQ (straight-through, EMA codebook update) → decoder, L1 + multi-scale mel +
                   commitment, backward, clipped AdamW
  gan_step         jaxcodec's real train step (`train.step.train_step`) against the PyTorch harness's generator
                   + MS-STFT discriminator step. Ours also computes the two teacher heads and their losses, dead-
                   code re-seeding and the finiteness guard, which the peer has no counterpart for: our side does
                   strictly more work.

Every (case, side) runs in its own process, so peak RSS is that case's, and the sides alternate (A B C A B C) over
`--rounds` so machine noise hits all of them alike; the table gives the median over rounds of each round's median
step and the spread (min–max of the round medians). Weights: the PyTorch peer is built once from the config
(seeded, `python -m scripts.torch_peers save`), saved as safetensors, and imported here with `jaxcodec.interop`.

Also reported: warm-up (PyTorch: the first call, which for torch.compile includes compilation) and compile time
(ours: `lower().compile()`), XLA's FLOP count of the compiled step and the FLOP/s it reaches against this
machine's float32 matmul rate (a jitted 2048² matmul), so the distance to the hardware limit is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxcodec import python_child

HELP = "JAX vs PyTorch (eager, torch.compile) throughput on the same model, weights and batch"
ROOT = Path(__file__).resolve().parents[2]  # the repository
TORCH_HARNESS = ROOT / "scripts" / "torch_peers"  # a package, run as `python -m scripts.torch_peers` from ROOT
TORCH_HARNESS_COMMAND = [sys.executable, "-m", "scripts.torch_peers"]
PEER_OF_CONFIG = {"base": "encodec", "speechtokenizer": "speechtokenizer", "tiny": "encodec"}
# (case, batch, seconds): the rows. encode at 1 × 10 s and 16 × 1 s; training steps at 4 × 1 s and 16 × 1 s.
DEFAULT_ROWS = ("encode:1:10", "encode:16:1", "generator_step:4:1", "generator_step:16:1", "warmup_step:4:1",
                "gan_step:4:1", "gan_step:16:1")
RUNNING_MEMORY_BUDGET_MB = 16 * 1024  # the accelerator memory the batch-size estimate is made for (16 GB)
MATMUL_SIZE = 2048  # the peak-rate probe: a float32 [n, n] @ [n, n], 2n³ FLOPs


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, iters: int) -> list[float]:
    import jax

    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def running_memory_mb(compiled) -> dict:
    """The compiled step's running memory from XLA's buffer assignment: its arguments (state and batch), its
    temporaries, and the outputs not written over donated arguments."""
    memory = compiled.memory_analysis()
    if memory is None:
        return {}
    state = memory.argument_size_in_bytes / 2**20
    transient = (memory.temp_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes) / 2**20
    return {"state_mb": state, "transient_mb": transient, "running_mb": state + transient,
            "xla_temp_mb": memory.temp_size_in_bytes / 2**20}


def _compiled(jitted, *args):
    """(compiled executable, compile seconds, XLA FLOPs, running memory MB)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return compiled, seconds, float((cost or {}).get("flops", 0.0)), running_memory_mb(compiled)


def _codec_from(weights: str, peer: str, config):
    from flax import nnx

    from jaxcodec.interop import convert, files
    from jaxcodec.models.codec import Codec

    codec = Codec(config, rngs=nnx.Rngs(config.train.seed))
    convert.import_peer(codec, peer, files.read_safetensors(weights)[0])
    return codec


def _generator_step(config, graphdef):
    """One generator update without discriminators: the PyTorch harness's `generator_step`, in JAX."""
    import jax
    import optax
    from flax import nnx

    from jaxcodec.losses import reconstruction
    from jaxcodec.train import state as state_lib

    lc, tx = config.loss, state_lib.generator_optimizer(config)

    def step(params, rest, opt_state, wav):
        def loss_fn(params):
            codec = nnx.merge(graphdef, params, rest)
            quantized = codec.quantizer(codec._encode_latents(wav))
            fake = codec._decode_latents(quantized.quantized_btd, wav.shape[1])
            loss = (lc.lambda_time * reconstruction.l1_time(wav, fake) + lc.lambda_mel * reconstruction.mel_loss(
                wav, fake, lc, config.model.sample_rate) + lc.lambda_commit * quantized.commitment_loss)
            return loss, quantized.stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        codec = nnx.merge(graphdef, params, rest)
        codec.quantizer.update(stats)
        _, _, rest = nnx.split(codec, nnx.Param, ...)
        return params, rest, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1, 2)), tx


def case_config(config_path: str, overrides: list[str], case: str, batch: int):
    """The config a case runs: the global batch set, and for the GAN step the discriminators on from step 0."""
    from jaxcodec import config as config_lib

    return config_lib.load(config_path, [*overrides, f"train.batch_size={batch}", "train.disc_warmup_steps=0"])


def prepare_jax_case(config, case: str, batch: int, seconds: float, codec=None):
    """(jitted function, its initial arguments, advance) for one case; `advance(compiled, args)` runs one call
    and returns (the next call's arguments, an output to wait on), so state threads through donated buffers.
    `codec`: imported weights (the bench); None builds a randomly initialised one (profiling: the cost does not
    depend on the weights)."""
    import jax
    from flax import nnx

    from jaxcodec.models.codec import Codec

    samples = int(round(seconds * config.model.sample_rate))
    wav = (0.1 * np.random.default_rng(0).standard_normal((batch, samples))).astype(np.float32)
    codec = codec if codec is not None else Codec(config, rngs=nnx.Rngs(config.train.seed))
    graphdef, params, rest = nnx.split(codec, nnx.Param, ...)
    # One buffer per leaf: a fresh module may share constant arrays between variables, and donation needs them apart.
    params, rest = jax.tree.map(lambda x: jax.numpy.array(x, copy=True), (params, rest))
    if case == "encode":
        jitted = jax.jit(lambda params, rest, wav: nnx.merge(graphdef, params, rest).encode(wav))
        return jitted, (params, rest, wav), lambda compiled, args: (args, compiled(*args))
    if case == "generator_step":
        jitted, tx = _generator_step(config, graphdef)

        def advance(compiled, args):
            params, rest, opt_state, loss = compiled(*args)
            return (params, rest, opt_state, args[3]), loss  # the state's buffers are donated

        return jitted, (params, rest, tx.init(params), wav), advance
    if case in ("gan_step", "warmup_step"):
        from jaxcodec.config import MeshConfig
        from jaxcodec.data.shards.format import CONTENT, SPEAKER_EMBEDDING
        from jaxcodec.train import sharding
        from jaxcodec.train import state as state_lib
        from jaxcodec.train import step as step_lib

        mesh = sharding.make_mesh(MeshConfig(), jax.devices()[:1])
        graphs, state, shardings = state_lib.create(config, mesh)
        state = state.replace(codec=state_lib.ModelState(params, rest))
        frames = -(-samples // config.model.hop_length)
        batch_arrays = {"wav": wav, "mask": np.ones_like(wav),
                        CONTENT: np.zeros((batch, frames, config.model.semantic_dim), np.float16),
                        SPEAKER_EMBEDDING: np.zeros((batch, config.model.acoustic_dim), np.float16)}
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        jitted = step_lib.jit_step(graphs, config, shardings, replicated, adversarial=case == "gan_step")
        state = jax.device_put(state, shardings)
        batch_arrays = jax.device_put(batch_arrays, replicated)

        def advance(compiled, args):
            state, metrics = compiled(*args)
            return (state, args[1]), metrics["loss/total"]

        return jitted, (state, batch_arrays), advance
    raise ValueError(f"unknown case {case!r}")


def run_jax_case(config_path: str, overrides: list[str], peer: str, weights: str, case: str, batch: int,
                 seconds: float, iters: int) -> dict:
    import jax

    config = case_config(config_path, overrides, case, batch)
    jitted, args, advance = prepare_jax_case(config, case, batch, seconds, _codec_from(weights, peer, config))
    compiled, compile_s, flops, memory = _compiled(jitted, *args)
    compile_peak_rss_mb = peak_rss_mb()  # the process's peak so far: initialisation and compilation
    holder = [args]

    def call():
        holder[0], out = advance(compiled, holder[0])
        return out

    start = time.perf_counter()
    jax.block_until_ready(call())  # first call: buffer allocation, donation set-up
    warmup = time.perf_counter() - start
    times = _timed(call, iters)
    return {"side": "jax", "case": case, "batch": batch, "seconds": seconds, "compile_seconds": compile_s,
            "warmup_seconds": warmup, "times": times, "median": statistics.median(times), "flops": flops,
            **memory, "compile_peak_rss_mb": compile_peak_rss_mb, "peak_rss_mb": peak_rss_mb(),
            "devices": jax.device_count(),
            "backend": jax.default_backend(), "jax_version": jax.__version__}


def matmul_peak(iters: int = 10) -> dict:
    """This machine's float32 matmul FLOP/s under XLA: the ceiling a conv/LSTM-bound step is measured against."""
    import jax
    import jax.numpy as jnp

    n = MATMUL_SIZE
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    times = _timed(lambda: f(a), iters)
    return {"size": n, "median": statistics.median(times), "flops_per_second": 2 * n**3 / statistics.median(times)}


# ---------------------------------------------------------------------------------------------------- driver

def _last_json(args: list[str], env: dict | None = None) -> dict:
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable output: {lines[-1][:200]}"}


def _row_label(row: dict) -> str:
    return f"{row['case']} {row['batch']} × {row['seconds']:g} s"


def summarise(runs: list[dict]) -> dict:
    """Round medians of one side → median, min, max; audio-seconds per second from the median."""
    good = [r for r in runs if "median" in r]
    if not good:
        return {"error": next((r.get("error") for r in runs if "error" in r), "no run")}
    medians = sorted(r["median"] for r in good)
    median = statistics.median(medians)
    first = good[0]
    out = {"median": median, "min": medians[0], "max": medians[-1], "rounds": len(good),
           "audio_seconds_per_second": first["batch"] * first["seconds"] / median,
           "warmup_seconds": statistics.median(r["warmup_seconds"] for r in good),
           "peak_rss_mb": max(r["peak_rss_mb"] for r in good)}
    for key in ("state_mb", "transient_mb", "running_mb"):  # XLA's are exact; PyTorch's RSS moves a little
        if key in first:
            out[key] = statistics.median(r[key] for r in good)
    if "compile_seconds" in first:
        out["compile_seconds"] = statistics.median(r["compile_seconds"] for r in good)
        out["flops"] = first["flops"]
        out["compile_peak_rss_mb"] = max(r["compile_peak_rss_mb"] for r in good)
    return out


def largest_batch(rows: list[dict], side: str, case: str = "gan_step",
                  budget_mb: float = RUNNING_MEMORY_BUDGET_MB) -> dict | None:
    """The largest batch of `case` whose running memory fits `budget_mb`, from a straight line through the
    measured (batch, running MB) points of one side (running memory is state + a per-example amount)."""
    rows = [r for r in rows if r["case"] == case and "running_mb" in r["summary"].get(side, {})]
    points = sorted({(r["batch"], r["summary"][side]["running_mb"]) for r in rows})
    if len(points) < 2:
        return None
    (b0, m0), (b1, m1) = points[0], points[-1]
    per_example = (m1 - m0) / (b1 - b0)
    fixed = m0 - per_example * b0
    return {"per_example_mb": per_example, "fixed_mb": fixed,
            "largest_batch": int((budget_mb - fixed) // per_example) if per_example > 0 else None,
            "from_batches": [b for b, _ in points], "seconds": rows[0]["seconds"]}


def run(args: argparse.Namespace) -> dict:
    if not (TORCH_HARNESS / "__main__.py").exists():
        raise SystemExit(f"jaxcodec bench: error: needs the PyTorch harness {TORCH_HARNESS} (a source checkout)")
    config_name = Path(args.config).stem
    peer = args.peer or PEER_OF_CONFIG.get(config_name, "encodec")
    overrides = [*args.overrides] + ([f"model.compute_dtype={args.compute_dtype}"] if args.compute_dtype != "none"
                                     else [])
    sets = [item for o in overrides for item in ("--set", o)]
    # The children run from the repository root, in python_child's environment (no stray PYTHONPATH).
    env = dict(python_child.environment(),
               JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu" if args.device == "cpu" else ""))
    results = {"config": args.config, "overrides": overrides, "peer": peer, "iters": args.iters,
               "rounds": args.rounds, "device": args.device, "compute_dtype": args.compute_dtype, "rows": []}
    with tempfile.TemporaryDirectory(prefix="jaxcodec-bench-") as tmp:
        weights = str(Path(tmp) / "weights.safetensors")
        saved = _last_json([*TORCH_HARNESS_COMMAND, "save", "--peer", peer, "--config", args.config,
                            *sets, "--seed", "0", "-o", weights])
        if "error" in saved:
            raise SystemExit(f"jaxcodec bench: error: building the {peer} peer failed: {saved['error']}")
        results["peer_parameters"] = saved.get("params")
        results["matmul"] = _last_json([sys.executable, "-m", "jaxcodec.commands.bench", "--matmul"], env)
        for spec in args.rows:
            case, batch, seconds = spec.split(":")
            sides = {"jax": [sys.executable, "-m", "jaxcodec.commands.bench", "--child", args.config, peer, weights,
                             case, batch, seconds, str(args.iters), *sets]}
            for mode in args.torch_modes:
                sides[f"torch {mode}"] = [*TORCH_HARNESS_COMMAND, "run", "--peer", peer, "--config",
                                          args.config, *sets, "--weights", weights, "--case", case, "--batch",
                                          batch, "--seconds", seconds, "--mode", mode, "--iters", str(args.iters),
                                          "--device", args.device, "--autocast", args.compute_dtype]
            runs = {side: [] for side in sides}
            for round_index in range(args.rounds):
                for side, command in sides.items():
                    load = os.getloadavg()[0]
                    result = _last_json(command, env)
                    result["load_average_before"] = load
                    runs[side].append(result)
                    status = result.get("error") or f"median {result['median']:.3f} s"
                    print(f"  {case} {batch}×{seconds}s round {round_index + 1} {side}: {status}", file=sys.stderr,
                          flush=True)
            results["rows"].append({"case": case, "batch": int(batch), "seconds": float(seconds), "runs": runs,
                                    "summary": {side: summarise(r) for side, r in runs.items()}})
    results["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "processor": platform.processor(), "load_average_after": os.getloadavg()}
    sides = {side for row in results["rows"] for side in row["summary"]}
    results["largest_gan_batch"] = {side: largest_batch(results["rows"], side) for side in sorted(sides)}
    return results


def _ratio(ours: dict, theirs: dict) -> str:
    if "median" not in ours or "median" not in theirs:
        return "—"
    return f"{theirs['median'] / ours['median']:.2f}×"


def markdown(results: dict) -> str:
    peak = results.get("matmul", {}).get("flops_per_second")
    params = results.get("peer_parameters")
    lines = [f"config `{results['config']}` {' '.join(results['overrides'])}vs {results['peer']} "
             f"({f'{params:,d}' if params else '?'} parameters); median of {results['rounds']} rounds × "
             f"{results['iters']} steps; machine: {results['machine']['cpu_count']} CPUs, "
             f"{results['machine']['platform']}",
             "",
             "| case | side | step s (median, min–max) | audio-s / s | jaxcodec speed-up | warm-up / compile s | "
             "running MB (state + transient) | peak RSS MB (process) | GFLOP | GFLOP/s (% of matmul peak) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        ours = row["summary"].get("jax", {})
        for side, s in row["summary"].items():
            if "error" in s:
                lines.append(f"| {_row_label(row)} | {side} | failed: {s['error'][:80]} | | | | | | | |")
                continue
            running = (f"{s['running_mb']:.0f} ({s['state_mb']:.0f} + {s['transient_mb']:.0f})"
                       if "running_mb" in s else "")
            flops = s.get("flops")
            rate = (f"{flops / s['median'] / 1e9:.1f} ({100 * flops / s['median'] / peak:.0f} %)"
                    if flops and peak else "")
            compile_s = f"{s['warmup_seconds']:.1f} / {s['compile_seconds']:.1f}" if "compile_seconds" in s \
                else f"{s['warmup_seconds']:.1f}"
            lines.append(f"| {_row_label(row)} | {side} | {s['median']:.3f} ({s['min']:.3f}–{s['max']:.3f}) | "
                         f"{s['audio_seconds_per_second']:.2f} | {'' if side == 'jax' else _ratio(ours, s)} | "
                         f"{compile_s} | {running} | {s['peak_rss_mb']:.0f} | "
                         f"{f'{flops / 1e9:.1f}' if flops else ''} | {rate} |")
    if peak:
        lines += ["", f"float32 matmul peak ({MATMUL_SIZE}², XLA): {peak / 1e9:.1f} GFLOP/s. Speed-up = PyTorch "
                      f"step time / jaxcodec step time (> 1: jaxcodec is faster)."]
    lines += ["", "Running memory: what a step holds while it runs. jaxcodec: the compiled step's arguments (state "
                  "and batch) + temporaries and outputs not aliased to donated arguments (`memory_analysis()`). "
                  "PyTorch: parameters, gradients, buffers and optimizer states + the peak RSS during the timed "
                  "steps minus the RSS just before them (on a GPU: peak allocated bytes). Peak RSS (process) also "
                  "counts start-up and compilation."]
    for side, fit in (results.get("largest_gan_batch") or {}).items():
        if fit and fit["largest_batch"]:
            lines.append(f"- {side}: largest GAN batch (× {fit['seconds']:g} s) in "
                         f"{RUNNING_MEMORY_BUDGET_MB / 1024:.0f} GB of running memory ≈ {fit['largest_batch']} "
                         f"({fit['fixed_mb']:.0f} MB + {fit['per_example_mb']:.0f} MB per example, a line through "
                         f"batches {fit['from_batches']})")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/base.yaml",
                        help="model config; its PyTorch peer: base → encodec, speechtokenizer → speechtokenizer")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--peer", choices=["encodec", "speechtokenizer"], help="override the config's peer")
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), metavar="CASE:BATCH:SECONDS")
    parser.add_argument("--torch-modes", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    parser.add_argument("--iters", type=int, default=5, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every side")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="both sides on this device: JAX on its default GPU backend, PyTorch on cuda")
    parser.add_argument("--compute-dtype", default="none", choices=["none", "bfloat16"],
                        help="bfloat16: jaxcodec's model.compute_dtype and PyTorch's torch.autocast")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="folder for peers-<config>.json and .md")


def main(args: argparse.Namespace) -> int:
    from jaxcodec import atomic

    results = run(args)
    table = markdown(results)
    stem = f"peers-{Path(args.config).stem}"
    atomic.write_json(args.out / f"{stem}.json", results)
    atomic.write_text(args.out / f"{stem}.md", table)
    print(table)
    print(f"written to {args.out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--matmul"]:
        print(json.dumps(matmul_peak()))
    elif sys.argv[1:2] == ["--child"]:
        config_path, peer, weights, case, batch, seconds, iters, *rest = sys.argv[2:]
        overrides = [value for flag, value in zip(rest[::2], rest[1::2], strict=True) if flag == "--set"]
        print(json.dumps(run_jax_case(config_path, overrides, peer, weights, case, int(batch), float(seconds),
                                      int(iters))))
    else:
        raise SystemExit("python -m jaxcodec.commands.bench is the benchmark's child process; run `jaxcodec bench`")
