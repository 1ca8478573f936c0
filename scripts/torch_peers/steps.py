"""The training steps of the harness, in jaxcodec/train/step.py's order: one generator forward, generator update
(global-norm clipping, AdamW), EMA codebook update, then the discriminator update on the detached reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jaxcodec import config as config_lib  # pure Python + yaml: no jax
from scripts.torch_peers.discriminators import TorchDiscriminators
from scripts.torch_peers.losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss
from scripts.torch_peers.mel import MultiScaleMelLoss
from scripts.torch_peers.rvq import RVQOutput, StraightThroughRVQ


def _adamw(params, optim: config_lib.OptimConfig, lr: float) -> torch.optim.Optimizer:
    # torch's default implementation for the device, as a PyTorch user would get it; a constant LR (jaxcodec's
    # warm-up + cosine schedule costs the same per step).
    return torch.optim.AdamW(params, lr=lr, betas=(optim.b1, optim.b2), eps=optim.eps,
                             weight_decay=optim.weight_decay)


def _apply(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor, clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:  # optax.clip_by_global_norm (torch adds 1e-6 to the norm in the divisor)
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


class GeneratorStep:
    """One generator step: peer encoder → straight-through RVQ → peer decoder, λt·L1 + λmel·mel + λw·commit,
    backward, global-norm clipping, AdamW, then the EMA codebook update. `compile=True` wraps the loss function
    (forward and losses) in `torch.compile`; its backward is compiled by AOTAutograd with it. The optimizer,
    clipping and the EMA update stay eager."""

    def __init__(self, model: nn.Module, config: config_lib.Config, compile: bool = False,
                 autocast: torch.dtype | None = None):
        self.model, self.config = model.train(), config
        self.device = next(model.parameters()).device
        self.autocast = autocast  # e.g. torch.bfloat16: the forward and losses under torch.autocast, as AMP trains
        self.rvq = StraightThroughRVQ.from_peer(model, config.rvq)
        self.mel = MultiScaleMelLoss(config.loss.mel_form, config.model.sample_rate).to(self.device)
        # The peer's encoder and decoder; SpeechTokenizer's semantic `transform` gets no loss here.
        self.params = [*model.encoder.parameters(), *model.decoder.parameters()]
        self.optimizer = _adamw(self.params, config.optim, config.optim.learning_rate)
        self.loss_fn = torch.compile(self.generator_loss) if compile else self.generator_loss

    def reconstruct(self, wav_b1n: torch.Tensor) -> tuple[torch.Tensor, RVQOutput]:
        z_btd = self.model.encoder(wav_b1n).transpose(1, 2)
        rvq = self.rvq(z_btd)
        fake_b1n = self.model.decoder(rvq.quantized_btd.transpose(1, 2))
        return fake_b1n[..., : wav_b1n.shape[-1]], rvq

    def generator_loss(self, wav_b1n: torch.Tensor):
        """(weighted total, {term: value}, RVQ output, reconstruction)."""
        lc = self.config.loss
        fake_b1n, rvq = self.reconstruct(wav_b1n)
        terms = {"l1": F.l1_loss(fake_b1n, wav_b1n), "mel": self.mel(wav_b1n[:, 0], fake_b1n[:, 0]),
                 "commit": rvq.commitment}
        total = lc.lambda_time * terms["l1"] + lc.lambda_mel * terms["mel"] + lc.lambda_commit * terms["commit"]
        return total, terms, rvq, fake_b1n

    def forward_context(self):
        """torch.autocast around forward passes and losses when a compute dtype is set (backward runs outside)."""
        return torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None)

    def _generator_update(self, wav_b1n: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        with self.forward_context():
            total, terms, rvq, fake_b1n = self.loss_fn(wav_b1n)
        _apply(self.optimizer, self.params, total, self.config.optim.grad_clip)
        self.rvq.update_(rvq.codes_qn, rvq.residuals_qnd)
        metrics = {"loss/total": total.item(), **{f"loss/{k}": v.item() for k, v in terms.items()}}
        return metrics, fake_b1n.detach()

    def __call__(self, wav_b1n: torch.Tensor) -> dict[str, float]:
        return self._generator_update(wav_b1n)[0]


class GANStep(GeneratorStep):
    """The generator step plus λadv·adversarial + λfeat·feature matching against the discriminators as they are
    at the start of the step, then the discriminator update on the real batch and the detached reconstruction
    (jaxcodec/train/step.py's order). With `compile=True` the discriminator loss is compiled too."""

    def __init__(self, model: nn.Module, config: config_lib.Config, compile: bool = False,
                 autocast: torch.dtype | None = None):
        super().__init__(model, config, compile, autocast)
        self.disc = TorchDiscriminators(config.disc).train().to(self.device)
        self.disc_params = list(self.disc.parameters())
        self.disc_optimizer = _adamw(self.disc_params, config.optim, config.optim.disc_learning_rate)
        self.disc_loss_fn = torch.compile(self.discriminator_loss) if compile else self.discriminator_loss

    def generator_loss(self, wav_b1n: torch.Tensor):
        lc = self.config.loss
        total, terms, rvq, fake_b1n = super().generator_loss(wav_b1n)
        fake_logits, fake_fmaps = self.disc(fake_b1n)
        with torch.no_grad():  # real feature maps are constants (jaxcodec: stop_gradient)
            _, real_fmaps = self.disc(wav_b1n)
        terms["adv"] = generator_adversarial_loss(fake_logits, lc.adversarial)
        terms["feat"] = feature_matching_loss(real_fmaps, fake_fmaps)
        return total + lc.lambda_adv * terms["adv"] + lc.lambda_feat * terms["feat"], terms, rvq, fake_b1n

    def discriminator_loss(self, wav_b1n: torch.Tensor, fake_b1n: torch.Tensor) -> torch.Tensor:
        real_logits, _ = self.disc(wav_b1n)
        fake_logits, _ = self.disc(fake_b1n)
        return discriminator_loss(real_logits, fake_logits, self.config.loss.adversarial)

    def __call__(self, wav_b1n: torch.Tensor) -> dict[str, float]:
        # Frozen during the generator update: jaxcodec differentiates the generator loss w.r.t. the codec only,
        # and torch would otherwise compute (and discard) the discriminators' weight gradients.
        self.disc.requires_grad_(False)
        metrics, fake_b1n = self._generator_update(wav_b1n)
        self.disc.requires_grad_(True)
        with self.forward_context():
            d_loss = self.disc_loss_fn(wav_b1n, fake_b1n)
        _apply(self.disc_optimizer, self.disc_params, d_loss, self.config.optim.grad_clip)
        return {**metrics, "loss/disc": d_loss.item()}
