"""The PyTorch side of the JAX-vs-PyTorch throughput benchmark: the peers (transformers' `EncodecModel`, the
`speechtokenizer` package's `SpeechTokenizer`) built with a jaxcodec config's hyper-parameters, and a training
harness that does the same computation as jaxcodec's generator/GAN step around the peer's encoder and decoder.

Why a harness: both peers ship inference code only. Their quantizers pass no gradient to the encoder, and
neither package holds the losses, discriminators or optimizers of its training recipe. To compare "same
architecture, same weights, same batch", this package mirrors, in plain torch:
- the straight-through residual VQ with EMA codebooks of `jaxcodec/models/quantizer.py` (nearest code by
  squared distance, z + sg(Σq − z) into the decoder, commitment loss, `ema_update`), on the peer's own codebook
  buffers. Dead-code re-seeding and k-means initialisation are left out: they are data-dependent events, not
  per-step cost, and the benchmark starts from random codebooks;
- the multi-scale mel losses of `jaxcodec/spectral.py` (both `mel_form`s) and L1 on the waveform;
- the discriminators of `jaxcodec/models/discriminators.py` (EnCodec's MS-STFT; HiFi-GAN's MPD/MSD when the
  config's `disc.kinds` lists them) and the adversarial / relative feature-matching losses of
  `jaxcodec/losses/adversarial.py`;
- the step order of `jaxcodec/train/step.py`: one generator forward, generator update (global-norm clipping,
  AdamW), EMA codebook update, then the discriminator update on the detached reconstruction.
Not mirrored: the teacher heads and their semantic/acoustic losses (the peers' codecs have no acoustic aligner),
the learning-rate schedule (a constant LR costs the same), non-finite-step skipping, padding masks (the
benchmark's batches are whole), the discriminator warm-up (adversarial terms are always on here).
`tests/test_torch_peers.py` checks every mirrored loss and the quantizer against jaxcodec and numpy.

This package imports torch, numpy, safetensors, transformers and `jaxcodec.config` (pure Python + yaml) only,
never jax: it runs in its own process next to jaxcodec's, and must not pay for (or be slowed by) a second
framework. Its modules, by idea: `peers` (building, weights, encode), `mel`, `rvq`, `discriminators`, `losses`,
`steps` (the train steps), `cases` (what the benchmark times and measures) and `cli` (the command line, run by
`__main__`); this module re-exports the names the benchmark's tests call. From the repository root:

    python -m scripts.torch_peers save --peer encodec --config configs/base.yaml --seed 0 -o W.safetensors
    python -m scripts.torch_peers run --peer encodec --config configs/base.yaml --weights W.safetensors \\
        --case encode|generator_step|gan_step --batch 8 --seconds 1 --mode eager|compile --iters 5 [--threads 2]

Each prints one JSON line (the last line of stdout). A failing `torch.compile` is reported in that line's
"error" field, with exit status 0, rather than as a crash.
"""

import torch  # noqa: F401  (the torch the harness runs: `scripts.torch_peers.torch`)

from scripts.torch_peers import cases
from scripts.torch_peers.cases import synthetic_batch
from scripts.torch_peers.cli import main
from scripts.torch_peers.losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss
from scripts.torch_peers.mel import MultiScaleMelLoss, encodec_mel_scales, mel_filterbank, speechtokenizer_mel_scales
from scripts.torch_peers.peers import (
    build_peer,
    count_parameters,
    encode_function,
    load_weights,
    peer_codebooks,
    save_weights,
    speechtokenizer_class,
)
from scripts.torch_peers.rvq import StraightThroughRVQ, ema_update
from scripts.torch_peers.steps import GANStep, GeneratorStep

__all__ = ["GANStep", "GeneratorStep", "MultiScaleMelLoss", "StraightThroughRVQ", "build_peer", "cases",
           "count_parameters", "discriminator_loss", "ema_update", "encode_function", "encodec_mel_scales",
           "feature_matching_loss", "generator_adversarial_loss", "load_weights", "main", "mel_filterbank",
           "peer_codebooks", "save_weights", "speechtokenizer_class", "speechtokenizer_mel_scales", "synthetic_batch"]
