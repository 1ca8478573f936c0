"""The harness's command line: `save` builds a peer and writes its weights, `run` times one case; each prints one
JSON line (the last line of stdout). A failing `torch.compile` is reported in that line's "error" field, with exit
status 0, rather than as a crash."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from collections.abc import Sequence

import torch

from jaxcodec import config as config_lib  # pure Python + yaml: no jax
from scripts.torch_peers import cases
from scripts.torch_peers.cases import CASES, RunningMemory, synthetic_batch, tensors_bytes
from scripts.torch_peers.peers import PEERS, build_peer, count_parameters, load_weights, save_weights

DESCRIPTION = ("The PyTorch side of the JAX-vs-PyTorch throughput benchmark: the peers (transformers' `EncodecModel`, "
               "the\n`speechtokenizer` package's `SpeechTokenizer`) built with a jaxcodec config's hyper-parameters, "
               "and a training\nharness that does the same computation as jaxcodec's generator/GAN step around the "
               "peer's encoder and decoder.")


def _save(args: argparse.Namespace) -> dict:
    model = build_peer(args.peer, args.config, args.seed, args.set)
    save_weights(model, args.output)
    return {"peer": args.peer, "config": str(args.config), "seed": args.seed, "params": count_parameters(model),
            "file": str(args.output)}


AUTOCAST_DTYPES = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = config_lib.load(args.config, args.set)
    model = load_weights(build_peer(args.peer, args.config, args.seed, args.set), args.weights).to(device)
    result = {"peer": args.peer, "case": args.case, "mode": args.mode, "batch": args.batch,
              "seconds": args.seconds, "params": count_parameters(model), "device": str(device),
              "autocast": args.autocast}
    wav = synthetic_batch(args.batch, args.seconds, config.model.sample_rate, args.seed).to(device)
    try:
        call, holder = cases.make_case(args.case, args.peer, model, config, args.mode == "compile", wav,
                                 AUTOCAST_DTYPES[args.autocast])
        start = time.perf_counter()
        call()  # warm-up; in compile mode this is where torch.compile compiles
        result["warmup_seconds"] = time.perf_counter() - start
    except Exception as error:  # a failed compile is a result to report, not a crash
        if args.mode != "compile":
            raise
        result.update(error=f"{type(error).__name__}: {error}", warmup_seconds=None, times=[], median=None)
    else:
        times = []
        with RunningMemory(device) as memory:
            for _ in range(args.iters):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
        # Running memory = what the step keeps between calls + what it adds while it runs (jaxcodec's side:
        # the compiled step's arguments + temporaries), so both sides count the same things.
        result.update(times=times, median=statistics.median(times) if times else None,
                      state_mb=(tensors_bytes(holder) + wav.numel() * wav.element_size()) / 2**20,
                      transient_mb=memory.transient / 2**20)
        result["running_mb"] = result["state_mb"] + result["transient_mb"]
    # The load average (this process included) says whether something else shared the cores: with all cores
    # given to torch, one other busy process slowed a tiny GAN step 40-fold here (OpenMP threads wait on each
    # other), so a median means little without it.
    return {**result, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "load_average": list(os.getloadavg())}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.torch_peers", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--peer", choices=PEERS, required=True)
        sub.add_argument("--config", required=True, help="jaxcodec YAML config (configs/base.yaml ↔ encodec, "
                                                          "configs/speechtokenizer.yaml ↔ speechtokenizer)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
        sub.add_argument("--seed", type=int, default=0, help="torch seed of the weights; numpy seed of the input")

    save = commands.add_parser("save", help="build the peer with random weights and save them as safetensors")
    common(save)
    save.add_argument("-o", "--output", required=True)
    run = commands.add_parser("run", help="time one case; prints one JSON line")
    common(run)
    run.add_argument("--weights", required=True, help="safetensors file written by `save`")
    run.add_argument("--case", choices=CASES, required=True)
    run.add_argument("--batch", type=int, required=True)
    run.add_argument("--seconds", type=float, required=True, help="audio seconds per example")
    run.add_argument("--mode", choices=("eager", "compile"), default="eager")
    run.add_argument("--iters", type=int, default=5, help="timed calls after the warm-up")
    run.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    run.add_argument("--device", default="cpu", help="torch device: cpu or cuda (cuda:N)")
    run.add_argument("--autocast", choices=list(AUTOCAST_DTYPES), default="none",
                     help="torch.autocast compute dtype for forward passes and losses (AMP)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = _save(args) if args.command == "save" else _run(args)
    print(json.dumps(result), flush=True)
    return 0
