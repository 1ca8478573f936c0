"""Scripts: corpus synthesis, benchmark drivers and the PyTorch baseline harness (importable from tests)."""
