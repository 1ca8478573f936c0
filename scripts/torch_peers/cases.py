"""The benchmark's cases (encode, generator_step, warmup_step, gan_step) as no-argument callables on a synthetic
batch, and what a case's run measures besides time: the bytes a step keeps, the memory it adds while it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jaxcodec import config as config_lib  # pure Python + yaml: no jax
from scripts.torch_peers.peers import encode_function
from scripts.torch_peers.steps import GANStep, GeneratorStep

CASES = ("encode", "generator_step", "warmup_step", "gan_step")


def synthetic_batch(batch: int, seconds: float, sample_rate: int, seed: int) -> torch.Tensor:
    """0.1 · N(0, 1) float32 [B, 1, seconds · sample_rate]: the step's cost does not depend on the audio."""
    wav = 0.1 * np.random.default_rng(seed).standard_normal((batch, 1, round(seconds * sample_rate)))
    return torch.from_numpy(wav.astype(np.float32))


def configure_dynamo() -> None:
    """Lets torch.compile compile every layer, with static shapes, in the warm-up call.

    transformers' EncodecConv1d keeps its stride and kernel size as tensor buffers, so its padding is
    data-dependent: dynamo breaks the graph in every conv and recompiles the same resume function for each conv
    (weight norm makes each a class of its own) and each input length. With the defaults it gives up after 8
    and runs the rest eagerly, and automatic dynamic shapes recompiles again during the timed calls."""
    torch._dynamo.config.recompile_limit = 1024
    torch._dynamo.config.accumulated_recompile_limit = 8192
    torch._dynamo.config.automatic_dynamic_shapes = False


# jaxcodec's warm-up step is its generator step (no discriminator); the PyTorch peer has no other.
STEP_OF_CASE = {"generator_step": GeneratorStep, "warmup_step": GeneratorStep, "gan_step": GANStep}


def make_case(case: str, peer: str, model: nn.Module, config: config_lib.Config, compile: bool,
              wav: torch.Tensor, autocast: torch.dtype | None = None) -> tuple[Callable[[], object], object]:
    """(a no-argument callable doing one unit of work, the object holding the case's state). The callable returns
    only when the work is done: CPU calls are synchronous, the steps read their losses back with `.item()`, and
    on a GPU the encode case synchronises."""
    if compile:
        configure_dynamo()
    if case == "encode":
        encode = encode_function(peer, model, config)
        encode = torch.compile(encode) if compile else encode

        def call():
            with torch.inference_mode(), torch.autocast(wav.device.type, dtype=autocast, enabled=autocast is not None):
                codes = encode(wav)
            if wav.device.type == "cuda":
                torch.cuda.synchronize()
            return codes

        return call, model
    step = STEP_OF_CASE[case](model, config, compile=compile, autocast=autocast)
    return (lambda: step(wav)), step


def tensors_bytes(*holders) -> int:
    """Bytes of every distinct tensor a step keeps between calls: parameters (and their gradients), buffers and
    optimizer states of the modules and optimizers found on `holders`."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen and t.numel():
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()

    for holder in holders:
        modules = [v for v in vars(holder).values() if isinstance(v, nn.Module)] if not isinstance(
            holder, nn.Module) else [holder]
        for module in modules:
            for p in module.parameters():
                add(p)
                add(p.grad)
            for b in module.buffers():
                add(b)
        for opt in [v for v in vars(holder).values() if isinstance(v, torch.optim.Optimizer)]:
            for state in opt.state.values():
                for t in state.values():
                    add(t)
    return total


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RunningMemory:
    """Memory a CPU step uses while it runs: peak RSS during the timed calls minus RSS just before them (Linux:
    the peak is reset through /proc/self/clear_refs, so compilation and warm-up peaks do not count); on a GPU,
    torch's peak allocated bytes over the timed calls minus those allocated before them."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            try:  # return freed heap pages to the OS first, so "before" is what is live
                import ctypes

                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            self.before = _proc_status_kb("VmRSS") * 1024
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = _proc_status_kb("VmHWM") * 1024
        self.transient = max(self.peak - self.before, 0)
        return False
