"""Where a teacher's model comes from: a local directory or the model hub, whether the hub can be reached, and
the one-line message when it cannot."""

from __future__ import annotations

from pathlib import Path


def is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


HUB_PROBE_SECONDS = 3.0  # a reachable hub answers a TCP connect in well under this


def hub_reachable() -> bool:
    """Whether the model hub (HF_ENDPOINT, default huggingface.co) accepts a connection. Asked only when a model is
    not in the local cache: without it, huggingface_hub retries for ~25 s, printing a warning per retry, before
    failing. HF_HUB_OFFLINE=1 means no."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_SECONDS):
            return True
    except OSError:
        return False


def offline_message(kind: str, source: str, flag: str) -> str:
    return (f"cannot load {kind} '{source}': the model hub is unreachable and the model is not in the local cache; "
            f"download it on a connected machine, or pass a local directory with {flag} DIR")
