"""jaxcodec: a JAX/Flax speech tokenizer guided by semantic (HuBERT) and acoustic (ECAPA-TDNN) teachers."""

__version__ = "0.1.0"
