"""The codec's training losses, as pure functions of jnp arrays returning float32 scalars, by idea:
`reconstruction` (waveform L1, multi-scale mel), `adversarial` (discriminator, generator, feature matching),
`distillation` (the semantic and acoustic guidance losses and their floors), `balancer` (EnCodec's gradient
balancer) and `masking` (the masked means they share: masks are 1.0 for real samples/frames and 0.0 for padding).

Sources: EnCodec (arXiv 2210.13438; facebookresearch/encodec encodec/balancer.py; facebookresearch/audiocraft
audiocraft/adversarial/losses.py), HiFi-GAN (arXiv 2010.05646; the same functions copied in ZhangXInFD/
SpeechTokenizer speechtokenizer/trainer/loss.py) and SpeechTokenizer's distillation losses (same file).

The package re-exports the public functions: a train step combines losses of every idea, and its callers write
`losses.mel_loss(...)`, `losses.balance_gradients(...)` without caring which module holds which.
"""

from jaxcodec.losses.adversarial import (
    FEATURE_SCALE_FLOOR,
    HIFIGAN_FEATURE_LOSS_SCALE,
    AdversarialKind,
    Reduction,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from jaxcodec.losses.balancer import balance_gradients, balancer_init
from jaxcodec.losses.distillation import (
    COSINE_EPS,
    DEFAULT_TEMPERATURE,
    acoustic_floor,
    acoustic_loss,
    semantic_floor,
    semantic_loss,
)
from jaxcodec.losses.masking import masked_rms
from jaxcodec.losses.reconstruction import l1_time, mel_loss

__all__ = [
    "COSINE_EPS", "DEFAULT_TEMPERATURE", "FEATURE_SCALE_FLOOR", "HIFIGAN_FEATURE_LOSS_SCALE", "AdversarialKind",
    "Reduction", "acoustic_floor", "acoustic_loss", "balance_gradients", "balancer_init", "discriminator_loss",
    "feature_matching_loss", "generator_adversarial_loss", "l1_time", "masked_rms", "mel_loss", "semantic_floor",
    "semantic_loss",
]
