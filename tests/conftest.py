"""Test-wide set-up: 8 fake CPU devices (multi-device code paths run on one machine), no hub downloads."""

import os

# Must happen before jax is imported anywhere: multi-device tests shard over these fake CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests never reach a model hub: loading code is exercised on checkpoints the tests save locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
