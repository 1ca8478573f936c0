"""Weight fingerprints for the shards' provenance (torch is imported only inside the function, so the CLI can
build its parser without it)."""

from __future__ import annotations

import hashlib


def weights_sha256(module) -> str:
    """A fingerprint of the weights themselves (name, dtype, shape, bytes of every tensor in the state dict of a
    torch module), independent of the file format they were loaded from."""
    import torch  # here, not at import time: the CLI imports this package to build its parser

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
