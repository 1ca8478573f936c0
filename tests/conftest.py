"""Test-wide set-up: 8 fake CPU devices (multi-device code paths run on one machine), no hub downloads."""

import os

# Must happen before jax is imported anywhere: multi-device tests shard over these fake CPU devices.
# XLA's CPU collectives abort the process (SIGABRT) when a device thread misses a rendezvous past a timeout; with
# 8 fake devices on 2 shared cores a starved thread did (seen in CI), so tests allow 15 minutes.
COLLECTIVE_TIMEOUTS = ("--xla_cpu_collective_call_terminate_timeout_seconds=900 "
                       "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120 "
                       "--xla_cpu_collective_timeout_seconds=900")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 " + COLLECTIVE_TIMEOUTS)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLI keeps compiled programs in a user cache folder; tests compile afresh (tests that use a cache pass their own
# JAX_COMPILATION_CACHE_DIR) and write nothing outside their temporary folders.
os.environ.setdefault("JAXCODEC_COMPILE_CACHE", "off")
# Tests never reach a model hub: loading code is exercised on checkpoints the tests save locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
