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
import threading
import warnings
from pathlib import Path

from jaxcodec import atomic

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


# --- whole executables, for the training step ---------------------------------------------------------------------
# JAX's cache above still traces and lowers the program to compute its key: for the base config's GAN step that is
# ~5 s of Python on every start, more than loading the compiled code. For the one program whose start-up matters
# most, the training step, jaxcodec also keeps the loaded executable itself (jax.experimental.serialize_executable),
# keyed by everything that decides the program: jaxcodec's source, the libraries' versions, JAX's settings, XLA's
# flags, the machine, the devices, and the caller's description (for the train step: config, mesh, batch shapes).
# A changed source file or setting is a different key, never a stale program.
EXECUTABLES = "executables"
_KEY_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class _JaxCacheHits:
    """JAX's persistent-cache hits in this process, counted from the first `start()`. An executable JAX loaded
    from its own cache cannot be serialised again on XLA:CPU (the copy fails when it runs: "Function wrapped_slice
    not found"), so `compile_and_store` stores only programs compiled while this count did not move."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()
        self._listening = False

    def start(self) -> None:
        import jax

        with self._lock:
            if not self._listening:
                jax.monitoring.register_event_listener(self._on_event)
                self._listening = True

    def _on_event(self, event: str, **_) -> None:
        if event == _CACHE_HIT_EVENT:
            self.count += 1


_JAX_CACHE_HITS = _JaxCacheHits()


def _source_digest() -> str:
    """sha256 over jaxcodec's own Python files (paths and contents): an edited model is another program."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def executable_key(description: str) -> str:
    """The cache key of a program described by `description` (the caller's config, shapes and shardings)."""
    from importlib import metadata

    import jax

    versions = []
    for package in _KEY_PACKAGES:
        try:
            versions.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package}=?")
    devices = jax.devices()
    parts = [description, _source_digest(), " ".join(versions), machine_tag(), os.environ.get("XLA_FLAGS", ""),
             repr(sorted((k, repr(v)) for k, v in jax.config.values.items())),
             f"{devices[0].platform} {devices[0].client.platform_version} {[d.device_kind for d in devices]}",
             f"process {jax.process_index()} of {jax.process_count()}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def load_or_compile(jitted, *abstract_args, description: str, folder: str | Path | None = None):
    """`jitted.lower(*abstract_args).compile()`, or the same executable loaded from the cache without tracing:
    `load`, else `compile_and_store`."""
    program = load(description, folder)
    return program if program is not None else compile_and_store(jitted, *abstract_args, description=description,
                                                                 folder=folder)


def _entry(description: str, folder: str | Path | None) -> Path | None:
    """The cache file of `description`, or None when the cache is off: it lives in `<folder or JAX's cache
    folder>/executables/`, so by default it is on exactly when the persistent cache is (`enable`), and only in
    single-process runs (a multi-host program's executable is built jointly by the processes)."""
    import jax

    folder = folder or jax.config.jax_compilation_cache_dir
    if not folder or jax.process_count() > 1:
        return None
    return Path(folder) / EXECUTABLES / f"{executable_key(description)}.pkl"


def load(description: str, folder: str | Path | None = None):
    """The executable stored for `description` (a `jax.stages.Compiled`), or None. A damaged or foreign entry is
    a warning and None: the cache can only save time."""
    import pickle

    import jax
    from jax.experimental import serialize_executable

    path = _entry(description, folder)
    if path is None or not path.exists():
        return None
    try:
        payload, in_tree, out_tree, device_ids = pickle.loads(path.read_bytes())
        by_id = {device.id: device for device in jax.devices()}
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree,
                                                         execution_devices=[by_id[i] for i in device_ids])
    except Exception as err:  # a truncated or foreign file: compile instead  # noqa: BLE001
        warnings.warn(f"compiled-step cache entry {path} unusable ({type(err).__name__}: {err}); compiling",
                      stacklevel=2)
        return None


def compile_and_store(jitted, *abstract_args, description: str, folder: str | Path | None = None):
    """`jitted.lower(*abstract_args).compile()`, stored under `description` when the cache is on. One gap: a
    program JAX loads from its own cache is not stored (see `_JaxCacheHits`), so after a change of key that leaves
    the program as it was (an edit elsewhere in jaxcodec, an upgrade) runs start as fast as JAX's cache makes them
    until the program itself changes. A failure to store is a warning."""
    import pickle

    from jax.experimental import serialize_executable

    path = _entry(description, folder)
    _JAX_CACHE_HITS.start()
    hits_before = _JAX_CACHE_HITS.count
    compiled = jitted.lower(*abstract_args).compile()
    if path is None or _JAX_CACHE_HITS.count != hits_before:  # loaded from JAX's cache (or another thread's was)
        return compiled
    try:
        # The devices it runs on, in the program's order (the loader's default would be all of the backend's).
        device_ids = [device.id for device in compiled._executable._unloaded_executable.device_list]
        blob = pickle.dumps((*serialize_executable.serialize(compiled), device_ids))
        with atomic.replacing(path) as tmp:  # two processes storing one key write the same program: last wins
            tmp.write_bytes(blob)
    except Exception as err:  # noqa: BLE001
        warnings.warn(f"could not store the compiled step in {path.parent} ({type(err).__name__}: {err})",
                      stacklevel=2)
    return compiled
