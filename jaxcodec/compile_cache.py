"""JAX's persistent compilation cache for jaxcodec's commands: compiled XLA programs are kept on disk, so a second
`jaxcodec train` (a resume), `eval`, `encode` or demo run of the same config loads its programs instead of
compiling them again (the base config's GAN step takes over a minute to compile on 2 CPU cores).

Where: `$JAXCODEC_COMPILE_CACHE` if set (a folder, or `off`), else `$XDG_CACHE_HOME/jaxcodec/xla` (default
`~/.cache/jaxcodec/xla`), in a subfolder per machine kind. A cache JAX was already given (`JAX_COMPILATION_CACHE_DIR`
or `jax.config`) is left as it is. JAX keys each entry by the program, the compile options, the backend and the
jax/jaxlib versions; the per-machine subfolder adds the CPU's instruction-set extensions, because XLA:CPU compiles
for the host's vector units and a cache shared over NFS by unlike machines must not hand one the other's code.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from pathlib import Path

ENV = "JAXCODEC_COMPILE_CACHE"
# JAX's own default threshold: a program that compiles faster than this is not worth a file and a disk read.
MIN_COMPILE_SECONDS = 1.0


def _cpu_features() -> str:
    """The host CPU's model and flags (Linux), which decide what XLA:CPU compiles for."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', '')} {fields.get('flags', fields.get('Features', ''))}"


def machine_tag() -> str:
    digest = hashlib.sha256(f"{platform.machine()} {_cpu_features()}".encode()).hexdigest()[:12]
    return f"{platform.machine()}-{digest}"


def default_folder() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jaxcodec" / "xla" / machine_tag()


def enable(folder: str | Path | None = None) -> Path | None:
    """Turns the cache on (at `folder`, `$JAXCODEC_COMPILE_CACHE` or the default) unless it is `off` or JAX
    already has one; returns the folder in use, or None. A folder that cannot be created is a warning, not an
    error: the run compiles as it would without a cache."""
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    choice = str(folder) if folder is not None else os.environ.get(ENV, "")
    if choice.lower() == "off":
        return None
    path = Path(choice).expanduser() if choice else default_folder()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        warnings.warn(f"compilation cache disabled: cannot create {path} ({err})", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # the user's threshold wins
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
