"""A short end-to-end training run of the tiny codec on generated audio, on CPU, in a few minutes.

Stands in for `jaxcodec demo` until the demo issue lands: it exercises every model part and every loss (SEANet,
RVQ with k-means init and EMA updates, the semantic head and acoustic aligner, the MS-STFT discriminator,
adversarial/feature-matching/mel/L1/commitment/distillation losses) in one jitted GAN step, and writes:
  OUT/original.wav, OUT/reconstruction.wav   a held-out clip and its reconstruction after training
  OUT/curves.png                             losses and per-level codebook perplexity
  OUT/metrics.json                           the logged numbers

The audio is synthetic speech-like sound (glottal pulses through moving formant resonators, with fricative
noise), not speech. The teachers are STAND-INS, not HuBERT or ECAPA-TDNN: fixed random projections of the
clip's log-mel frames (semantic, 768-d at 50 Hz) and of its mean log-mel (acoustic, 192-d). The real teachers
arrive with the precompute issue; this run only shows that the guided objective trains.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal
import soundfile
from flax import nnx

from jaxcodec import config as config_lib
from jaxcodec import losses, spectral
from jaxcodec.models.codec import Codec
from jaxcodec.models.discriminators import Discriminators
from jaxcodec.train import state as state_lib

# Formant frequencies (Hz) of five vowels, after Peterson & Barney (1952), adult male averages.
VOWEL_FORMANTS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
FORMANT_BANDWIDTHS_HZ = (80, 100, 120)


def synth_clip(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Voiced segments (pulse train at a drifting f0 through three formant resonators) and noise bursts."""
    out = np.zeros(n_samples)
    pos = 0
    f0_base = rng.uniform(90, 240)  # one "speaker" per clip
    while pos < n_samples:
        seg = int(rng.uniform(0.06, 0.2) * sample_rate)
        t = np.arange(seg) / sample_rate
        if rng.random() < 0.8:
            f0 = f0_base * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
            phase = np.cumsum(f0) / sample_rate
            source = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
            formants = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))]
            for freq, bw in zip(formants, FORMANT_BANDWIDTHS_HZ, strict=True):
                r = np.exp(-np.pi * bw / sample_rate)
                theta = 2 * np.pi * freq / sample_rate
                source = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], source)
        else:
            source = scipy.signal.lfilter([1, -0.9], [1], rng.normal(size=seg)) * 0.1
        envelope = np.hanning(seg)
        chunk = (source * envelope)[: n_samples - pos]
        out[pos : pos + len(chunk)] = chunk
        pos += seg
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def stand_in_teachers(wav_bn: np.ndarray, config: config_lib.Config) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic functions of the audio standing in for HuBERT frames and an ECAPA embedding."""
    hop = config.model.hop_length
    mel = spectral.MelSpectrogram(sample_rate=config.model.sample_rate, n_fft=1024, hop_length=hop,
                                  win_length=1024, n_mels=80, log="log", floor=1e-5)
    log_mel = np.asarray(mel(jnp.asarray(wav_bn)))[:, : wav_bn.shape[1] // hop]
    proj = np.random.default_rng(1234)
    semantic = log_mel @ proj.normal(size=(80, config.model.semantic_dim)) / np.sqrt(80)
    acoustic = log_mel.mean(1) @ proj.normal(size=(80, config.model.acoustic_dim)) / np.sqrt(80)
    # Standardised per vector, like an embedding of unit scale: raw projections of log-mel (|values| ~ 5-10)
    # make softmax(teacher) one-hot and the KL drives the student's logits, and through the straight-through
    # estimator the latents, to ever larger scales.
    acoustic = (acoustic - acoustic.mean(-1, keepdims=True)) / acoustic.std(-1, keepdims=True)
    return semantic.astype(np.float32), acoustic.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--steps", type=int, default=None, help="default: train.num_steps of the config")
    parser.add_argument("--clips", type=int, default=64, help="generated training clips")
    args = parser.parse_args()

    config = config_lib.load(args.config, args.overrides)
    steps = args.steps or config.train.num_steps
    sr, batch = config.model.sample_rate, config.train.batch_size
    seg = int(config.data.segment_seconds * config.model.frame_rate) * config.model.hop_length
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(config.train.seed)
    print(f"generating {args.clips + 1} synthetic clips of {seg / sr:.2f} s ...", flush=True)
    wavs = np.stack([synth_clip(rng, seg, sr) for _ in range(args.clips + 1)])
    semantic_targets, acoustic_targets = stand_in_teachers(wavs, config)
    held_out = wavs[-1:]
    wavs, semantic_targets, acoustic_targets = wavs[:-1], semantic_targets[:-1], acoustic_targets[:-1]

    codec = Codec(config, rngs=nnx.Rngs(config.train.seed))
    disc = Discriminators(config.disc, rngs=nnx.Rngs(config.train.seed + 1))
    gen_opt = nnx.Optimizer(codec, state_lib.optimizer(config.optim, config.optim.learning_rate, steps), wrt=nnx.Param)
    disc_opt = nnx.Optimizer(disc, state_lib.optimizer(config.optim, config.optim.disc_learning_rate, steps),
                             wrt=nnx.Param)
    lc = config.loss

    def generator_loss(codec, disc, wav, hubert, ecapa, adversarial_on, key):
        out = codec(wav, key=key)
        fake_logits, fake_fmaps = disc(out.wav_bn)
        _, real_fmaps = disc(wav)
        terms = {
            "l1": losses.l1_time(wav, out.wav_bn),
            "mel": losses.mel_loss(wav, out.wav_bn, lc, sr),
            "commit": out.quantizer.commitment_loss,
            "semantic": losses.semantic_loss(out.semantic_btd, hubert, out.mask_bt, axis=lc.semantic_axis),
            "acoustic": losses.acoustic_loss(out.acoustic, ecapa, lc.acoustic_temperature),
            "adv": losses.generator_adversarial_loss(fake_logits, lc.adversarial),
            "feat": losses.feature_matching_loss(real_fmaps, fake_fmaps),
        }
        total = (lc.lambda_time * terms["l1"] + lc.lambda_mel * terms["mel"] + lc.lambda_commit * terms["commit"]
                 + lc.lambda_semantic * terms["semantic"] + lc.lambda_acoustic * terms["acoustic"]
                 + adversarial_on * (lc.lambda_adv * terms["adv"] + lc.lambda_feat * terms["feat"]))
        return total, (terms, out)

    @nnx.jit
    def train_step(codec, disc, gen_opt, disc_opt, wav, hubert, ecapa, adversarial_on, key):
        grad_fn = nnx.value_and_grad(generator_loss, has_aux=True)
        (total, (terms, out)), grads = grad_fn(codec, disc, wav, hubert, ecapa, adversarial_on, key)
        gen_opt.update(codec, grads)
        usage = codec.quantizer.update(out.quantizer.stats)  # EMA step, outside the gradient
        fake = jax.lax.stop_gradient(out.wav_bn)

        def disc_loss(disc):
            real_logits, _ = disc(wav)
            fake_logits, _ = disc(fake)
            return losses.discriminator_loss(real_logits, fake_logits, lc.adversarial)

        d_loss, d_grads = nnx.value_and_grad(disc_loss)(disc)
        disc_opt.update(disc, jax.tree.map(lambda g: g * adversarial_on, d_grads))
        return {"total": total, **terms, "disc": d_loss, **usage}

    init_codebooks = nnx.jit(lambda codec, wav, key: codec.init_codebooks(wav, None, key))
    reconstruct = nnx.jit(lambda codec, wav: codec.decode(codec.encode(wav)))

    history: list[dict] = []
    key = jax.random.key(config.train.seed)
    start = time.time()
    for step in range(steps):
        idx = rng.choice(len(wavs), batch, replace=False)
        wav, hubert, ecapa = (jnp.asarray(a[idx]) for a in (wavs, semantic_targets, acoustic_targets))
        key, step_key, init_key = jax.random.split(key, 3)
        if step == 0 and config.rvq.kmeans_init:
            init_codebooks(codec, wav, init_key)
        adversarial_on = jnp.float32(step >= config.train.disc_warmup_steps)
        metrics = train_step(codec, disc, gen_opt, disc_opt, wav, hubert, ecapa, adversarial_on, step_key)
        if step % config.train.log_every == 0 or step == steps - 1:
            row = {k: np.asarray(v).tolist() for k, v in metrics.items()}
            row["step"], row["seconds"] = step, round(time.time() - start, 1)
            history.append(row)
            perplexity = " ".join(f"{p:.0f}" for p in row["perplexity_q"])
            print(f"step {step:4d}  {row['seconds']:6.1f}s  total {row['total']:.3f}  mel {row['mel']:.3f}  "
                  f"l1 {row['l1']:.4f}  sem {row['semantic']:.3f}  ac {row['acoustic']:.4f}  "
                  f"adv {row['adv']:.3f}  disc {row['disc']:.3f}  perplexity/level [{perplexity}]", flush=True)

    recon = np.asarray(reconstruct(codec, jnp.asarray(held_out)))
    soundfile.write(out_dir / "original.wav", held_out[0], sr)
    soundfile.write(out_dir / "reconstruction.wav", recon[0], sr)
    (out_dir / "metrics.json").write_text(json.dumps(history, indent=1))
    plot(history, out_dir / "curves.png")
    err = float(np.mean(np.abs(recon - held_out)))
    print(f"done in {time.time() - start:.0f} s; held-out L1 {err:.4f}; wrote {out_dir}/original.wav, "
          f"reconstruction.wav, curves.png, metrics.json")


def plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in history]
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("mel", "l1", "semantic", "acoustic", "commit", "adv", "disc"):
        ax_loss.plot(steps, [row[name] for row in history], label=name)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("losses (stand-in teachers)")
    ax_loss.legend(fontsize=8)
    perplexity = np.array([row["perplexity_q"] for row in history])
    for level in range(perplexity.shape[1]):
        ax_ppl.plot(steps, perplexity[:, level], label=f"level {level + 1}")
    ax_ppl.set_xlabel("step")
    ax_ppl.set_title("codebook perplexity per level (batch)")
    ax_ppl.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.rename(path)


if __name__ == "__main__":
    main()
