"""Files in and out of jaxcodec's interop: a peer's checkpoint (a safetensors file, a PyTorch `.pt`/`.bin`
converted in a torch subprocess, or a Hugging Face-style folder with `config.json`) read into a codec (which
`jaxcodec.train.from_codec` writes as a training workdir), and the exported single-file safetensors
(`jaxcodec export`) that `jaxcodec.load` reads.

Nothing here unpickles: safetensors only; PyTorch pickles are opened by `teachers.torch_state` with
`torch.load(weights_only=True)`.

An exported file holds flat tensors and, in its safetensors metadata, `format` ("jaxcodec", "encodec" or
"speechtokenizer"), the full jaxcodec `config` (JSON) and the `source` it came from, so one file is enough to
rebuild the codec.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from jaxcodec import atomic, python_child
from jaxcodec import config as config_lib
from jaxcodec.interop import convert
from jaxcodec.interop.layout import FORMATS, InteropError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_file(folder: Path) -> Path:
    """The one weights file of a checkpoint folder: safetensors preferred, else a single PyTorch file."""
    for pattern in ("model.safetensors", "*.safetensors", "pytorch_model.bin", *(f"*{s}" for s in TORCH_SUFFIXES)):
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InteropError(f"{folder}: several weight files match {pattern} ({found[0].name}, {found[1].name}, "
                               f"...): pass the file itself")
    raise InteropError(f"{folder}: no weights file (model.safetensors, *.safetensors, *.pt, *.bin)")


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata); a file that is not safetensors gives an InteropError naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError, OSError, ValueError
        raise InteropError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None


def _torch_to_tensors(path: Path) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="jaxcodec-import-") as tmp:
        out = Path(tmp) / "weights.safetensors"
        done = python_child.run("teachers.torch_state", [str(path), str(out)], capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            if "No module named 'torch'" in last:
                last = "reading a PyTorch file needs torch (pip install 'jaxcodec[teachers]'), or convert it first"
            raise InteropError(f"{path}: {last.removeprefix('error: ')}")
        return read_safetensors(out)[0]


def _read_peer_config(path: Path):
    """The parsed config.json beside a checkpoint (its values are checked by convert.config_mismatches)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InteropError(f"{path}: not a readable JSON file ({str(err).splitlines()[0]})") from None


def read_checkpoint(source: str | Path) -> tuple[dict[str, np.ndarray], dict | None, Path]:
    """(state dict as numpy, the peer's config.json if beside it, the weights file) of a file or folder."""
    source = Path(source)
    if not source.exists():
        raise InteropError(f"{source}: no such file or folder")
    weights = _weights_file(source) if source.is_dir() else source
    config_json = weights.parent / "config.json"
    peer_config = _read_peer_config(config_json) if config_json.is_file() else None
    if weights.suffix in TORCH_SUFFIXES:
        tensors = _torch_to_tensors(weights)
    else:
        tensors = read_safetensors(weights)[0]
    return tensors, peer_config, weights


def import_codec(peer: str, source: str | Path, config) -> tuple:
    """(codec holding the peer's weights, ImportReport, provenance dict). The parts the peer lacks (the teachers'
    heads) keep their initialisation from `config.train.seed`."""
    from flax import nnx

    from jaxcodec.models.codec import Codec

    convert.check_model_supported(peer, config)
    tensors, peer_config, weights = read_checkpoint(source)
    if peer_config is not None:
        try:
            problems = convert.config_mismatches(peer, peer_config, config)
        except InteropError as err:
            raise InteropError(f"{weights.parent / 'config.json'}: {err}") from None
        if problems:
            raise InteropError(f"{weights.parent / 'config.json'} disagrees with --config: {problems[0]}"
                               + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    codec = Codec(config, rngs=nnx.Rngs(config.train.seed))
    report = convert.import_peer(codec, peer, tensors)
    provenance = {"peer": peer, "source": str(Path(source).resolve()), "weights_file": str(weights.resolve()),
                  "weights_sha256": sha256(weights), "fresh": list(report.fresh),
                  "dropped_levels": report.dropped_levels, "reparameterised_convs": report.reparameterised}
    return codec, report, provenance


def export_file(codec, config, out: str | Path, fmt: str = "jaxcodec", source: str = "") -> dict:
    """Writes the codec as one safetensors file (atomically); `fmt` "encodec"/"speechtokenizer" uses the peer's
    state-dict names (loadable with `model.load_state_dict(safetensors.torch.load_file(out))`) and also writes
    the peer's `config.json` beside it. Returns a summary."""
    from safetensors.numpy import save_file

    if fmt not in FORMATS:
        raise InteropError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    if fmt == "jaxcodec":
        tensors = convert.export_native(codec)
    else:
        convert.check_model_supported(fmt, config)
        tensors = convert.export_peer(codec, fmt)
    metadata = {"format": fmt, "config": json.dumps(config_lib.to_dict(config)), "source": source}
    out = Path(out)
    with atomic.replacing(out) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
    if fmt != "jaxcodec":
        atomic.write_json(out.parent / "config.json", convert.peer_config(fmt, config))
    return {"file": str(out), "format": fmt, "tensors": len(tensors),
            "values": int(sum(v.size for v in tensors.values())), "bytes": out.stat().st_size}


def load_exported(path: str | Path):
    """(config, codec) from a file written by `export_file` (any format)."""
    tensors, metadata = read_safetensors(path)
    fmt = metadata.get("format")
    if fmt not in FORMATS or "config" not in metadata:
        raise InteropError(f"{path}: not a file written by `jaxcodec export` (no jaxcodec format/config metadata); "
                           f"a peer's checkpoint is read with `jaxcodec import`")
    config = config_lib.from_dict(json.loads(metadata["config"]))
    if fmt == "jaxcodec":
        return config, convert.codec_from_native(config, tensors)
    from flax import nnx

    from jaxcodec.models.codec import Codec

    codec = Codec(config, rngs=nnx.Rngs(config.train.seed))
    convert.import_peer(codec, fmt, tensors)
    return config, codec
