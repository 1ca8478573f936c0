"""The persistent compilation cache the commands turn on: where it goes, `off`, a cache JAX already has, and a
second process that loads a program the first compiled (counted by JAX's own cache-hit events)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Compiles one small program with the cache enabled as the CLI does; prints the folder and JAX's cache hits.
PROGRAM = """
import jax, jax.numpy as jnp
from jaxcodec import compile_cache
hits = []
jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
folder = compile_cache.enable()
jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))))
print(folder, len(hits))
"""


def run(env: dict) -> tuple[str, int]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAXCODEC_COMPILE_CACHE", "JAX_COMPILATION"))}
    done = subprocess.run([sys.executable, "-c", PROGRAM], env={**base, **env}, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    folder, hits = done.stdout.split()
    return folder, int(hits)


def test_second_process_loads_the_first_ones_program(tmp_path):
    env = {"JAXCODEC_COMPILE_CACHE": str(tmp_path / "cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    assert run(env) == (str(tmp_path / "cache"), 0)
    entries = list((tmp_path / "cache").iterdir())
    assert entries  # the program and the small ones jnp.ones compiles
    assert run(env) == (str(tmp_path / "cache"), len(entries))  # every one of them a hit


def test_default_folder_is_per_machine_under_the_user_cache(tmp_path):
    folder, _ = run({"XDG_CACHE_HOME": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
    path = Path(folder)
    assert path.parent == tmp_path / "jaxcodec" / "xla" and path.name.startswith(os.uname().machine)


def test_off_and_a_cache_jax_already_has(tmp_path):
    assert run({"JAXCODEC_COMPILE_CACHE": "off", "XDG_CACHE_HOME": str(tmp_path)})[0] == "None"
    assert not (tmp_path / "jaxcodec").exists()
    own = tmp_path / "theirs"
    folder, _ = run({"JAX_COMPILATION_CACHE_DIR": str(own), "JAXCODEC_COMPILE_CACHE": str(tmp_path / "ours")})
    assert folder == str(own) and not (tmp_path / "ours").exists()
