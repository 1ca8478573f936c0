"""jaxcodec: a JAX/Flax speech tokenizer guided by semantic (HuBERT) and acoustic (ECAPA-TDNN) teachers."""

__version__ = "0.1.0"


def load(workdir, step=None, **kwargs):
    """The trained codec of a training workdir as a `jaxcodec.tokenizer.Tokenizer` (encode / decode / reconstruct);
    `step`: None = latest checkpoint, "best" = lowest validation mel loss, or a step number. Imports jax lazily so
    that `import jaxcodec` (and the CLI's argument parsing) stays light."""
    from jaxcodec.tokenizer import load as _load

    return _load(workdir, step, **kwargs)
