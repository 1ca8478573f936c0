"""Per-op time of a compiled XLA program on the CPU, joined with what the optimised HLO says of each op: kind,
shapes, FLOPs, bytes and the jaxcodec source line that produced it. Used by `scripts/profile_step.py`.

The JAX profiler (`jax.profiler.trace`) records one event per executed HLO instruction on the XLA CPU runtime
(each carries an `hlo_op` stat); `jax.profiler.ProfileData` reads the trace back without TensorBoard. The
compiled module's text (`compiled.as_text()`) gives, per instruction, its shape, the called fusion body and
the metadata (JAX op name and Python stack frame) that name the code it came from.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import math
import re
import tempfile
from collections.abc import Callable

DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "s64": 8, "f64": 8,
               "c64": 8, "s16": 2, "u16": 2}
# FLOPs of a complex FFT of length n: the classic 5 n log2 n estimate (a real FFT is about half of it).
FFT_FLOPS_PER_N_LOG2N = 5.0

_SHAPE = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([0-9,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) \(.*\{\s*$")


@dataclasses.dataclass
class Instruction:
    name: str
    opcode: str
    shapes: list[tuple[str, tuple[int, ...]]]  # the result's (dtype, dims), several for a tuple
    operands: list[str]
    attributes: str
    computation: str
    calls: str | None = None

    @property
    def out_bytes(self) -> int:
        return sum(DTYPE_BYTES[d] * math.prod(s) for d, s in self.shapes)


def _shapes(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(d, tuple(int(x) for x in dims.split(",") if x)) for d, dims in _SHAPE.findall(text)]


def parse_hlo(text: str) -> tuple[dict[str, Instruction], dict[str, list[str]], dict[str, str]]:
    """(instructions by name, instruction names per computation, source location per instruction name)."""
    instructions: dict[str, Instruction] = {}
    computations: dict[str, list[str]] = collections.defaultdict(list)
    files, functions, locations, frames = {}, {}, {}, {}
    section, computation = None, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section = stripped
            continue
        if section and re.match(r"^\d+ ", stripped):
            key, rest = stripped.split(" ", 1)
            if section == "FileNames":
                files[key] = rest.strip('"')
            elif section == "FunctionNames":
                functions[key] = rest.strip('"')
            elif section == "FileLocations":
                fields = dict(re.findall(r"(\w+)=(\d+)", rest))
                locations[key] = (files.get(fields["file_name_id"], "?"), functions.get(fields["function_name_id"],
                                                                                        "?"), fields["line"])
            else:
                fields = dict(re.findall(r"(\w+)=(\d+)", rest))
                frames[key] = (fields["file_location_id"], fields.get("parent_frame_id", "0"))
            continue
        match = _COMPUTATION.match(line)
        if match:
            section, computation = None, match.group(1)
            continue
        match = _INSTRUCTION.match(line)
        if match and computation is not None:
            name, shape_text, opcode, rest = match.groups()
            args_text = rest.split(")", 1)[0]
            operands = re.findall(r"%([\w.\-]+)", args_text)
            calls = re.search(r"calls=%([\w.\-]+)", rest)
            instructions[name] = Instruction(name, opcode, _shapes(shape_text), operands, rest, computation,
                                             calls.group(1) if calls else None)
            computations[computation].append(name)
    sources = {}
    for name, inst in instructions.items():
        frame = re.search(r"stack_frame_id=(\d+)", inst.attributes)
        chain, seen = [], set()
        key = frame.group(1) if frame else None
        while key and key in frames and key not in seen:
            seen.add(key)
            location_id, parent = frames[key]
            file, function, line_no = locations.get(location_id, ("?", "?", "?"))
            if "jaxcodec" in file or "scripts" in file:
                chain.append(f"{file.rsplit('/', 1)[-1]}:{line_no}")
            key = parent if parent != key else None
        op_name = re.search(r'op_name="([^"]*)"', inst.attributes)
        sources[name] = " < ".join(chain[:3]) + (f" [{op_name.group(1).rsplit('/', 1)[-1]}]" if op_name else "")
        if op_name and "transpose(" in op_name.group(1):
            sources[name] = "bwd " + sources[name]
    return instructions, computations, sources


def _conv_flops(inst: Instruction, instructions: dict[str, Instruction]) -> tuple[float, str]:
    """2 · output elements · kernel window · kernel input features, and whether it is a weight gradient."""
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", inst.attributes)
    kernel = instructions.get(inst.operands[1]) if len(inst.operands) > 1 else None
    if not labels or kernel is None or not kernel.shapes:
        return 0.0, "conv"
    lhs_labels, rhs_labels, _ = labels.groups()
    rhs_dims = kernel.shapes[0][1]
    window = math.prod(d for label, d in zip(rhs_labels, rhs_dims, strict=False) if label.isdigit())
    in_features = rhs_dims[rhs_labels.index("i")]
    out_elements = math.prod(inst.shapes[0][1])
    lhs = instructions.get(inst.operands[0])
    lhs_spatial = math.prod(d for label, d in zip(lhs_labels, lhs.shapes[0][1], strict=False)
                            if label.isdigit()) if lhs else 0
    # A weight gradient convolves the input with the output gradient: its "kernel" is as long as the signal.
    kind = "conv dW" if lhs_spatial and window * 4 > lhs_spatial else "conv"
    return 2.0 * out_elements * window * in_features, kind


def _dot_flops(inst: Instruction, instructions: dict[str, Instruction]) -> float:
    lhs = instructions.get(inst.operands[0])
    contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", inst.attributes)
    if lhs is None or not contracting:
        return 0.0
    dims = lhs.shapes[0][1]
    k = math.prod(dims[int(i)] for i in contracting.group(1).split(",") if i)
    return 2.0 * math.prod(inst.shapes[0][1]) * k


def _fft_flops(inst: Instruction) -> float:
    length = re.search(r"fft_length=\{([0-9,]*)\}", inst.attributes)
    if not length:
        return 0.0
    n = math.prod(int(x) for x in length.group(1).split(","))
    batch = math.prod(inst.shapes[0][1]) / max(inst.shapes[0][1][-1], 1)
    return 0.5 * FFT_FLOPS_PER_N_LOG2N * n * math.log2(max(n, 2)) * batch


def describe(name: str, instructions: dict[str, Instruction], computations: dict[str, list[str]]) -> dict:
    """Kind, FLOPs, bytes (result + operands) and the main shapes of one executed instruction."""
    inst = instructions.get(name)
    if inst is None:
        return {"kind": "?", "flops": 0.0, "bytes": 0, "shape": ""}
    body = [instructions[n] for n in computations.get(inst.calls, [])] if inst.calls else [inst]
    flops, kind, shape = 0.0, None, ""
    for op in body:
        if op.opcode == "convolution":
            f, k = _conv_flops(op, instructions)
            flops, kind = flops + f, k
            kernel = instructions.get(op.operands[1])
            shape = f"{_fmt(instructions.get(op.operands[0]))} * {_fmt(kernel)} -> {_fmt(op)}"
        elif op.opcode == "dot":
            flops += _dot_flops(op, instructions)
            kind = kind or "dot"
            shape = f"{_fmt(instructions.get(op.operands[0]))} @ {_fmt(instructions.get(op.operands[1]))}"
        elif op.opcode == "fft":
            flops += _fft_flops(op)
            kind, shape = "fft", _fmt(op)
    if kind is None:
        opcodes = {op.opcode for op in body} - {"parameter", "bitcast", "constant", "broadcast", "tuple",
                                                 "get-tuple-element"}
        if inst.opcode == "while":
            kind = "loop"
        elif opcodes & {"reduce", "reduce-window"}:
            kind = "reduce"
        elif opcodes & {"scatter", "gather", "dynamic-slice", "dynamic-update-slice"}:
            kind = "gather/scatter"
        elif opcodes and opcodes <= {"transpose", "copy", "slice", "concatenate", "pad", "reshape", "reverse"}:
            kind = "layout (copy/transpose/pad)"
        else:
            kind = "elementwise"
        shape = _fmt(inst)
    operand_bytes = sum(instructions[o].out_bytes for o in inst.operands if o in instructions)
    return {"kind": kind, "flops": flops, "bytes": inst.out_bytes + operand_bytes, "shape": shape}


def _fmt(inst: Instruction | None) -> str:
    if inst is None or not inst.shapes:
        return "?"
    dtype, dims = inst.shapes[0]
    return f"{dtype}[{','.join(map(str, dims))}]"


def trace_op_times(run: Callable[[], object], iters: int) -> dict[str, tuple[float, float]]:
    """(seconds, executions) per call of each HLO instruction: summed over the calls' events, divided by `iters`
    (an instruction in a loop body runs once per iteration)."""
    import jax
    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory(prefix="jaxcodec-profile-") as folder:
        with jax.profiler.trace(folder):
            for _ in range(iters):
                jax.block_until_ready(run())
        path = sorted(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True))[-1]
        data = ProfileData.from_file(path)
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                op = dict(event.stats).get("hlo_op")
                if op:
                    totals[op][0] += event.duration_ns * 1e-9 / iters
                    totals[op][1] += 1 / iters
    return {op: (seconds, count) for op, (seconds, count) in totals.items()}


def _window(attributes: str) -> dict[str, list]:
    """HLO `window={size=3x9 stride=1x2 pad=1_1x4_4 rhs_dilate=2x1}` → per-dimension lists."""
    match = re.search(r"window=\{([^}]*)\}", attributes)
    fields = dict(item.split("=", 1) for item in match.group(1).split()) if match else {}
    size = [int(x) for x in fields.get("size", "").split("x") if x]
    ones = "x".join("1" for _ in size)
    return {"size": size,
            "stride": [int(x) for x in fields.get("stride", ones).split("x")],
            "pad": [tuple(int(v) for v in p.split("_")) for p in fields.get("pad", "x".join("0_0" for _ in size))
                    .split("x")],
            "lhs_dilate": [int(x) for x in fields.get("lhs_dilate", ones).split("x")],
            "rhs_dilate": [int(x) for x in fields.get("rhs_dilate", ones).split("x")]}


def standalone_conv_seconds(inst: Instruction, instructions: dict[str, Instruction], iters: int = 5) -> float:
    """Median time of the same convolution (shapes, window, dimension labels, groups) jitted on its own.

    The XLA CPU runtime hands a convolution to Eigen's thread pool and its profiler event ends at the hand-off,
    so a traced convolution shows only its launch; this is the measurement the table uses instead."""
    import statistics
    import time

    import jax
    import numpy as np

    lhs, rhs = instructions[inst.operands[0]], instructions[inst.operands[1]]
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", inst.attributes).groups()
    window = _window(inst.attributes)

    def spec(label: str, first: str, second: str) -> tuple[int, ...]:
        spatial = sorted((c, i) for i, c in enumerate(label) if c.isdigit())
        return (label.index(first), label.index(second), *(i for _, i in spatial))

    numbers = jax.lax.ConvDimensionNumbers(spec(labels[0], "b", "f"), spec(labels[1], "o", "i"),
                                           spec(labels[2], "b", "f"))
    groups = re.search(r"feature_group_count=(\d+)", inst.attributes)
    batch_groups = re.search(r"batch_group_count=(\d+)", inst.attributes)
    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(rng.standard_normal(lhs.shapes[0][1]).astype(np.float32))
    w = jax.numpy.asarray(rng.standard_normal(rhs.shapes[0][1]).astype(np.float32))
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, window["stride"], window["pad"], window["lhs_dilate"], window["rhs_dilate"], numbers,
        int(groups.group(1)) if groups else 1, int(batch_groups.group(1)) if batch_groups else 1))
    jax.block_until_ready(conv(x, w))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(conv(x, w))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def op_table(compiled, run: Callable[[], object], iters: int) -> list[dict]:
    """One row per executed instruction: seconds per call, kind, FLOPs, GFLOP/s, bytes, shapes, source.
    Convolutions are timed standalone (`standalone_conv_seconds`); their rows say so in `timing`."""
    instructions, computations, sources = parse_hlo(compiled.as_text())
    rows = []
    for name, (seconds, count) in trace_op_times(run, iters).items():
        info = describe(name, instructions, computations)
        inst = instructions.get(name)
        info["timing"] = "traced"
        if inst is not None and inst.opcode == "convolution" and inst.shapes[0][0] == "f32":
            seconds = standalone_conv_seconds(inst, instructions) * count
            info["timing"] = "standalone"
        # FLOPs and bytes per execution × executions per call (a loop body's instructions run every iteration).
        info["flops"] *= count
        info["bytes"] *= count
        rows.append({"op": name, "seconds": seconds, "count": count, **info, "source": sources.get(name, "")})
    rows.sort(key=lambda r: -r["seconds"])
    return rows
