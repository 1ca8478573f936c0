"""The persistent compilation cache the commands turn on: where it goes, `off`, a cache JAX already has, and a
second process that loads a program the first compiled (counted by JAX's own cache-hit events); and the
compiled-step cache on top of it: stored, loaded without tracing, keyed, robust to damage."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcodec import compile_cache

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


def test_compiled_step_cache_stores_loads_without_tracing_and_recovers(tmp_path):
    jitted = jax.jit(lambda x, y: {"out": jnp.sin(x) @ y}, donate_argnums=0)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # as the loop's steps: shardings given
    shapes = 2 * (jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=one_device),)
    x, y = np.random.default_rng(0).standard_normal((2, 8, 8)).astype(np.float32)
    expected = np.sin(x.astype(np.float64)) @ y

    class Untraceable:  # the cached program must come back without tracing or lowering anything
        def lower(self, *args):
            raise AssertionError("traced")

    first = compile_cache.load_or_compile(jitted, *shapes, description="a", folder=tmp_path)
    entries = list((tmp_path / compile_cache.EXECUTABLES).iterdir())
    assert len(entries) == 1
    loaded = compile_cache.load_or_compile(Untraceable(), *shapes, description="a", folder=tmp_path)
    for program in (first, loaded):
        np.testing.assert_allclose(program(jnp.asarray(x), jnp.asarray(y))["out"], expected, rtol=1e-5, atol=1e-5)
    compile_cache.load_or_compile(jitted, *shapes, description="b", folder=tmp_path)  # another program, another key
    assert len(list((tmp_path / compile_cache.EXECUTABLES).iterdir())) == 2
    entries[0].write_bytes(b"not a program")  # a damaged entry: a warning and a compile, never a crash
    with pytest.warns(UserWarning, match="unusable"):
        again = compile_cache.load_or_compile(jitted, *shapes, description="a", folder=tmp_path)
    np.testing.assert_allclose(again(jnp.asarray(x), jnp.asarray(y))["out"], expected, rtol=1e-5, atol=1e-5)


def test_compiled_step_key_covers_source_and_settings(monkeypatch):
    key = compile_cache.executable_key("a")
    assert compile_cache.executable_key("a") == key and compile_cache.executable_key("b") != key
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    assert compile_cache.executable_key("a") != key
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(compile_cache, "_source_digest", lambda: "an edited jaxcodec")
    assert compile_cache.executable_key("a") != key


# One process's compiled-step cache at folder sys.argv[1], JAX's cache at sys.argv[2]: prints the program's result.
STEP_PROGRAM = """
import sys, jax, jax.numpy as jnp
from jaxcodec import compile_cache
jax.config.update("jax_compilation_cache_dir", sys.argv[2])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
shape = jax.ShapeDtypeStruct((64, 64), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
program = compile_cache.load_or_compile(jax.jit(lambda x: jnp.tanh(x[:, :1] * x + 1.0).sum(0)), shape,
                                        description="x", folder=sys.argv[1])
print(float(program(jnp.ones((64, 64)))[0]))
"""


def test_a_program_jax_loaded_from_its_cache_is_not_stored_again(tmp_path):
    """XLA:CPU cannot re-serialise an executable JAX loaded from its own cache (it fails when run): the
    compiled-step cache must skip it, and every later process must still run."""
    def run_step(ours: str) -> float:
        done = subprocess.run([sys.executable, "-c", STEP_PROGRAM, str(tmp_path / ours), str(tmp_path / "jax")],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return float(done.stdout.split()[-1])

    expected = 64 * float(np.tanh(2.0))
    assert run_step("a") == pytest.approx(expected, rel=1e-5)  # compiled: stored in a/ (and in JAX's cache)
    assert run_step("b") == pytest.approx(expected, rel=1e-5)  # JAX's cache hit: not stored in b/
    assert run_step("b") == pytest.approx(expected, rel=1e-5)
    assert run_step("a") == pytest.approx(expected, rel=1e-5)  # loaded from a/
    assert len(list((tmp_path / "a" / "executables").iterdir())) == 1
    assert not (tmp_path / "b" / "executables").exists()
