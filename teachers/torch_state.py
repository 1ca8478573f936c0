"""A PyTorch checkpoint (`.pt`, `.pth`, `.bin`, `.ckpt`) → a safetensors file of its state dict, so `jaxcodec
import` (which never imports torch) can read released SpeechTokenizer / EnCodec weights.

    python -m teachers.torch_state IN.pt OUT.safetensors

Loads with `torch.load(weights_only=True)`: tensors and plain containers only, never arbitrary pickled objects.
A training checkpoint that nests the weights (`{"state_dict": ...}`, `{"model": ...}`, `{"generator": ...}`) is
unwrapped. Exit code 2 with a one-line message on anything else.
"""

from __future__ import annotations

import sys

NESTED_KEYS = ("state_dict", "model_state_dict", "model", "generator", "net")


def _is_state_dict(value) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def state_dict(path: str) -> dict:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ValueError(f"{path}: not a PyTorch checkpoint that loads without unpickling code "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if _is_state_dict(loaded):
        return loaded
    if isinstance(loaded, dict):
        for key in NESTED_KEYS:
            if _is_state_dict(loaded.get(key)):
                return loaded[key]
    raise ValueError(f"{path}: holds no state dict (a mapping of names to tensors, possibly under one of "
                     f"{', '.join(NESTED_KEYS)})")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    try:
        tensors = state_dict(args.source)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from safetensors.torch import save_file

    # save_file refuses tensors that share storage (tied or sliced weights): give each its own copy.
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, args.out,
              metadata={"source": args.source})
    return 0


if __name__ == "__main__":
    sys.exit(main())
