"""Typed configuration: one frozen dataclass per part, YAML files, `--set a.b=value` overrides.

Defaults reproduce the paper's model (arXiv 2507.06802, built on EnCodec/SpeechTokenizer conventions); the
comment beside each field says what it is and where its default comes from. Configs are frozen and hashable so
they can be passed to `jax.jit` as static arguments.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from jaxcodec.stopping import DEFAULT_STOP_SIGNALS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    sample_rate: int = 16_000  # Hz; the paper's codec runs at 16 kHz mono.
    channels: int = 1  # audio channels (mono).
    n_filters: int = 32  # SEANet base width (EnCodec: 32; SpeechTokenizer: 64).
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # decoder upsampling; the encoder uses them reversed. Hop 320 → 50 Hz.
    dimension: int = 128  # latent (codebook) dimension (EnCodec: 128; SpeechTokenizer: 1024).
    n_residual_layers: int = 1  # residual blocks per resolution (EnCodec: 1).
    residual_kernel_size: int = 3  # kernel of the first conv of each residual block (EnCodec: 3).
    dilation_base: int = 2  # dilation of residual block j is dilation_base**j (EnCodec: 2).
    kernel_size: int = 7  # first conv kernel (EnCodec: 7).
    last_kernel_size: int = 7  # last conv kernel (EnCodec: 7).
    compress: int = 2  # channel reduction inside residual blocks (EnCodec: 2).
    lstm_layers: int = 2  # LSTM layers after the encoder convs / before the decoder convs (EnCodec: 2).
    encoder_bidirectional: bool = False  # bidirectional encoder LSTM (SpeechTokenizer: True).
    causal: bool = False  # causal padding (EnCodec 24 kHz: True); SpeechTokenizer and this paper: non-causal.
    pad_mode: str = "reflect"  # padding mode of non-transposed convs (EnCodec: reflect).
    true_skip: bool = False  # identity residual shortcut; False = 1x1 conv shortcut (EnCodec/SpeechTokenizer default).
    norm: Literal["weight_norm", "none"] = "weight_norm"  # conv parameterisation (EnCodec: weight_norm).
    # SEANet conv initialisation: PyTorch's default (EnCodec), or LeCun-uniform with zero biases (see models/conv.py).
    conv_init: Literal["pytorch", "lecun"] = "pytorch"
    semantic_dim: int = 768  # HuBERT-base hidden size, target of the semantic head.
    acoustic_dim: int = 192  # ECAPA-TDNN embedding size, target of the acoustic aligner.
    aligner_dim: int = 256  # width of the acoustic attention align layer.
    aligner_heads: int = 8  # heads of the acoustic align layer (paper: 8).
    acoustic_mode: Literal["utterance", "frame"] = "utterance"  # speaker target: one vector, or [T, C] frames.
    # How the acoustic aligner's gradient reaches the encoder (models/guidance.py): "centred" removes, per level-1
    # code, the part of it that level 1 absorbs (without that the encoder's latents run away once the KL is
    # informative: bench/learning.md); "straight_through" passes it whole, as before.
    acoustic_gradient: Literal["centred", "straight_through"] = "centred"
    # The aligner's input standardised over the batch (per-channel mean removed, divided by the RMS): the aligner
    # then ignores a common offset and the scale of levels 2..n_q, which the codec could otherwise grow for it.
    aligner_input_norm: bool = True
    compute_dtype: Literal["float32", "bfloat16"] = "float32"  # activation dtype; parameters stay float32.

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.ratios:
            hop *= r
        return hop

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


@dataclasses.dataclass(frozen=True)
class RVQConfig:
    n_q: int = 8  # quantizer levels (paper: 8 → 400 tokens/s at 50 Hz).
    codebook_size: int = 1024  # codes per level (paper: 1024 → 10 bits/token).
    decay: float = 0.99  # EMA decay of codebook statistics (EnCodec: 0.99).
    epsilon: float = 1e-5  # Laplace smoothing of cluster sizes (EnCodec: 1e-5).
    kmeans_init: bool = True  # initialise each codebook by k-means on the first batch (EnCodec).
    kmeans_iters: int = 50  # k-means iterations for that initialisation (EnCodec RVQ: 50).
    dead_code_threshold: float = 2.0  # codes whose EMA count falls below this are re-seeded (EnCodec: 2).
    quantizer_dropout: float = 0.0  # probability that a training example uses a random number of levels (DAC).


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    kinds: tuple[str, ...] = ("msstft",)  # any of "msstft" (EnCodec), "mpd", "msd" (HiFi-GAN); [] = no GAN.
    msstft_filters: int = 32  # base channels of each STFT discriminator (EnCodec: 32).
    msstft_n_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128)  # EnCodec paper's five scales; hop = n_fft/4.
    msstft_max_filters: int = 1024  # channel cap (EnCodec).
    msstft_filters_scale: int = 1  # channel growth per layer (EnCodec: 1).
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # HiFi-GAN periods.
    msd_scales: int = 3  # HiFi-GAN MSD: raw, ×2 and ×4 average-pooled.
    conv_init: Literal["pytorch", "lecun"] = "pytorch"  # as model.conv_init, for the discriminators' convs.


@dataclasses.dataclass(frozen=True)
class LossConfig:
    lambda_time: float = 0.1  # L1 waveform weight (EnCodec λt = 0.1).
    lambda_mel: float = 1.0  # multi-scale mel weight (EnCodec λf = 1).
    lambda_adv: float = 3.0  # adversarial weight (EnCodec λg = 3).
    lambda_feat: float = 3.0  # feature-matching weight (EnCodec λfeat = 3).
    lambda_commit: float = 1.0  # commitment weight (EnCodec λw = 1).
    lambda_semantic: float = 0.5  # semantic (HuBERT) distillation weight (paper: 0.5).
    lambda_acoustic: float = 0.5  # acoustic (ECAPA) distillation weight (paper: 0.5).
    mel_form: Literal["encodec", "speechtokenizer"] = "encodec"  # multi-scale mel recipe (see spectral.py).
    adversarial: Literal["hinge", "lsgan"] = "hinge"  # EnCodec: hinge; HiFi-GAN/SpeechTokenizer: least squares.
    semantic_axis: Literal["dimension", "time"] = "dimension"  # SpeechTokenizer's D-axis cosine, or per frame.
    # τ of the acoustic KL (softmax(teacher/τ) ‖ softmax(student/τ)); unset: the shard set's calibrated τ
    # (jaxcodec/data/shards/calibration.py), or 1.0 (the paper's) for a set without calibration.
    acoustic_temperature: float | None = None
    # Centre and scale the speaker teacher's embeddings by the shard set's calibration before the softmax; false:
    # its raw values (the paper's τ = 1 on raw ECAPA-TDNN: `loss.acoustic_standardize=false
    # loss.acoustic_temperature=1`).
    acoustic_standardize: bool = True
    balancer: bool = False  # EnCodec's gradient balancer over the losses that act on the decoded waveform.
    balancer_ema_decay: float = 0.999  # EMA of gradient norms in the balancer (EnCodec: 0.999).


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 3e-4  # generator peak LR (EnCodec: 3e-4).
    disc_learning_rate: float = 3e-4  # discriminator peak LR.
    b1: float = 0.5  # Adam β1 (EnCodec: 0.5).
    b2: float = 0.9  # Adam β2 (EnCodec: 0.9).
    eps: float = 1e-8  # Adam ε (torch.optim.Adam and optax default, as EnCodec trains).
    weight_decay: float = 0.0  # AdamW decoupled weight decay.
    warmup_steps: int = 1000  # linear warm-up steps before the cosine decay.
    min_lr_ratio: float = 0.1  # final LR as a fraction of the peak.
    grad_clip: float = 1.0  # global-norm gradient clipping (0 disables).


@dataclasses.dataclass(frozen=True)
class DataConfig:
    segment_seconds: float = 1.0  # training crop length (EnCodec: 1 s); rounded down to whole frames.
    short_utterances: Literal["pad", "drop"] = "pad"  # shorter than a segment: pad with a mask, or drop.
    # Which content-teacher features the shards must hold: a HuBERT layer number, "avg", or "phones" (PocketSphinx
    # posteriorgrams). Formerly data.hubert_layer (still read: RENAMED_KEYS).
    content_layer: str = "9"
    loudness_normalize: bool = False  # normalise each crop's loudness before training.
    loudness_target_db: float = -20.0  # crop RMS (dBFS, re full scale 1.0) under loudness_normalize; project choice.
    gain_augment_db: float = 0.0  # random gain in ±this many dB on training crops (0 = off, project default).
    shuffle_seed: int = 0  # global shuffle seed of the input pipeline.
    worker_count: int = 0  # grain multiprocess workers (0 = in-process).


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64  # global batch (utterance crops per step; EnCodec: 64).
    num_steps: int = 300_000  # optimizer steps.
    checkpoint_every: int = 5_000  # steps between checkpoints.
    eval_every: int = 5_000  # steps between validation passes (0: no validation).
    # Also validate the untrained model before step 0 (a fresh run only): every curve starts from its baseline.
    validate_at_start: bool = False
    log_every: int = 100  # steps between metric logs.
    seed: int = 0  # parameter-init and training RNG seed.
    disc_warmup_steps: int = 0  # steps before the discriminator and adversarial losses switch on.
    max_consecutive_skips: int = 10  # non-finite steps in a row before the run stops.
    # A guidance loss not below 95 % of its floor (what a constant student reaches) for a whole log interval after
    # this many steps is warned about once (train/monitor.py); before it the heads are still warming up.
    floor_check_after: int = 500
    # A run stops (with its last good checkpoint) when loss/total or the generator's gradient norm reaches this
    # many times the lowest median of a log interval so far: two orders of magnitude. 0 disables the check.
    divergence_factor: float = 100.0
    keep_checkpoints: int = 3  # checkpoints kept (plus the best by validation mel loss).
    # Which activations the backward pass recomputes instead of keeping (jax.checkpoint): the SEANet encoder and
    # decoder blocks, the discriminators, both, or none; remat_policy says what a rematerialised block still keeps
    # ("nothing", or "dots": conv and matmul outputs). bench/NOTES.md has memory and step time of each setting.
    remat: Literal["none", "seanet", "disc", "both"] = "none"
    remat_policy: Literal["nothing", "dots"] = "nothing"
    # Signals that stop the run at the next step boundary with a checkpoint (jaxcodec/stopping.py): a scheduler's
    # preemption notice (SIGTERM), Ctrl-C, SLURM's `--signal` (SIGUSR1 in its examples). A second one exits at once.
    stop_signals: tuple[str, ...] = DEFAULT_STOP_SIGNALS

    def remat_policy_of(self, part: Literal["seanet", "disc"]) -> str | None:
        """The policy `part` is rematerialised under, or None when `remat` leaves it alone."""
        return self.remat_policy if self.remat in (part, "both") else None


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    shape: tuple[int, ...] = (-1, 1)  # devices along ('data', 'fsdp'); -1 takes the rest.
    axes: tuple[str, ...] = ("data", "fsdp")  # mesh axis names.
    param_sharding: Literal["replicated", "fsdp"] = "replicated"  # how parameters and optimizer state are laid out.
    fsdp_min_size: int = 2**18  # parameters smaller than this stay replicated under "fsdp".


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    rvq: RVQConfig = RVQConfig()
    disc: DiscriminatorConfig = DiscriminatorConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()

    @property
    def tokens_per_second(self) -> float:
        return self.model.frame_rate * self.rvq.n_q

    @property
    def kbps(self) -> float:
        bits = (self.rvq.codebook_size - 1).bit_length()
        return self.tokens_per_second * bits / 1000.0


class ConfigError(ValueError):
    """A config file or override names an unknown key, a value of the wrong type, or one out of its range."""


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Checks `value` against the type `hint` (the few kinds configs use) and converts lists to tuples."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{path}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_hint, *_) = typing.get_args(hint)
        return tuple(_coerce(v, item_hint, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `content_layer: 9` in YAML
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported config type {hint!r}")


def _build(cls: type, mapping: dict, path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key '{where}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in mapping.items()}
    return dataclasses.replace(cls(), **kwargs) if kwargs else cls()


# Keys renamed since configs were first saved (workdirs' config.json, users' YAML and --set): old name → new.
RENAMED_KEYS = {"data.hubert_layer": "data.content_layer"}


def _rename_legacy_keys(mapping: dict) -> dict:
    """`mapping` with RENAMED_KEYS moved to their new names; both names with different values is an error."""
    mapping = {k: dict(v) if isinstance(v, dict) else v for k, v in mapping.items()}
    for old, new in RENAMED_KEYS.items():
        (section, old_key), (_, new_key) = old.split("."), new.split(".")
        part = mapping.get(section)
        if not isinstance(part, dict) or old_key not in part:
            continue
        value = part.pop(old_key)
        if new_key in part and part[new_key] != value:
            raise ConfigError(f"{old} (the old name of {new}) = {value!r} disagrees with {new} = {part[new_key]!r}")
        part.setdefault(new_key, value)
    return mapping


def from_dict(mapping: dict) -> Config:
    """Builds a Config from nested plain data; unspecified fields keep their defaults. Every value is range-checked
    (`validate`), so no command starts on a config that cannot run."""
    return validate(_build(Config, _rename_legacy_keys(mapping or {})))


def to_dict(config: Config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _set_path(mapping: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = mapping
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{key}' is not a section")
    node[keys[-1]] = value


def apply_overrides(mapping: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Applies `a.b=value` strings (value parsed as YAML, so `[-1, 1]`, `true`, `3e-4` work) to nested data."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        dotted, raw = item.split("=", 1)
        _set_path(mapping, dotted.strip(), yaml.safe_load(raw))
    return mapping


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a YAML config (or the defaults when `path` is None) and applies `--set` overrides."""
    mapping: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        mapping = yaml.safe_load(path.read_text()) or {}
        if not isinstance(mapping, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    return from_dict(apply_overrides(mapping, overrides))


# --- value ranges ------------------------------------------------------------------------------------------------
# Every numeric field of every section, with the range outside which its value means nothing (or crashes a run
# minutes in, after compiling: a zero checkpoint interval divides by zero, zero codebooks stack nothing). `validate`
# checks them all at load, before anything is built, and tests/test_config.py checks that no numeric field is
# missing here. A rule is (check, what the message says the value must be); tuple fields apply it to each entry.

def _positive_int(v) -> bool:
    return v >= 1


def _non_negative_int(v) -> bool:
    return v >= 0


def _finite_non_negative(v) -> bool:
    return math.isfinite(v) and v >= 0


def _positive(v) -> bool:
    return math.isfinite(v) and v > 0


def _finite(v) -> bool:
    return math.isfinite(v)


def _fraction(v) -> bool:  # a probability or ratio, both ends allowed
    return 0 <= v <= 1


def _decay(v) -> bool:  # an EMA decay or Adam β: 1 would never move from the initial value
    return 0 <= v < 1


def _mesh_axis(v) -> bool:  # a device count, or -1 for "the remaining devices"
    return v == -1 or v >= 1


def _signal_name(v: str) -> bool:
    return v in signal.Signals.__members__ and v not in ("SIGKILL", "SIGSTOP")  # those two cannot be handled


_AT_LEAST_1 = (_positive_int, "an integer ≥ 1")
_AT_LEAST_0 = (_non_negative_int, "an integer ≥ 0")
_NON_NEGATIVE = (_finite_non_negative, "a finite number ≥ 0")
_POSITIVE = (_positive, "a finite number > 0")
_POSITIVE_OR_UNSET = (lambda v: v is None or _positive(v), "a finite number > 0, or unset (null)")
_DIVERGENCE = (lambda v: math.isfinite(v) and (v == 0 or v > 1), "0 (off) or a finite factor > 1")
_FINITE = (_finite, "a finite number")
_FRACTION = (_fraction, "in [0, 1]")
_DECAY = (_decay, "in [0, 1)")
RANGES: dict[str, tuple[Any, str]] = {
    "model.sample_rate": _AT_LEAST_1, "model.channels": _AT_LEAST_1, "model.n_filters": _AT_LEAST_1,
    "model.ratios": _AT_LEAST_1, "model.dimension": _AT_LEAST_1, "model.n_residual_layers": _AT_LEAST_0,
    "model.residual_kernel_size": _AT_LEAST_1, "model.dilation_base": _AT_LEAST_1, "model.kernel_size": _AT_LEAST_1,
    "model.last_kernel_size": _AT_LEAST_1, "model.compress": _AT_LEAST_1,
    "model.lstm_layers": _AT_LEAST_0,  # 0: no LSTM (seanet.py)
    "model.semantic_dim": _AT_LEAST_1, "model.acoustic_dim": _AT_LEAST_1, "model.aligner_dim": _AT_LEAST_1,
    "model.aligner_heads": _AT_LEAST_1,
    "rvq.n_q": _AT_LEAST_1, "rvq.codebook_size": _AT_LEAST_1, "rvq.decay": _DECAY, "rvq.epsilon": _POSITIVE,
    "rvq.kmeans_iters": _AT_LEAST_0, "rvq.dead_code_threshold": _NON_NEGATIVE, "rvq.quantizer_dropout": _FRACTION,
    "disc.msstft_filters": _AT_LEAST_1, "disc.msstft_n_ffts": _AT_LEAST_1, "disc.msstft_max_filters": _AT_LEAST_1,
    "disc.msstft_filters_scale": _AT_LEAST_1, "disc.mpd_periods": _AT_LEAST_1, "disc.msd_scales": _AT_LEAST_1,
    "loss.lambda_time": _NON_NEGATIVE, "loss.lambda_mel": _NON_NEGATIVE, "loss.lambda_adv": _NON_NEGATIVE,
    "loss.lambda_feat": _NON_NEGATIVE, "loss.lambda_commit": _NON_NEGATIVE, "loss.lambda_semantic": _NON_NEGATIVE,
    "loss.lambda_acoustic": _NON_NEGATIVE, "loss.acoustic_temperature": _POSITIVE_OR_UNSET,
    "loss.balancer_ema_decay": _DECAY,
    "optim.learning_rate": _POSITIVE, "optim.disc_learning_rate": _POSITIVE, "optim.b1": _DECAY,
    "optim.b2": _DECAY,
    "optim.eps": _POSITIVE,  # Adam's ε divides: 0 turns a zero second moment into NaN
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.warmup_steps": _AT_LEAST_0, "optim.min_lr_ratio": _FRACTION,
    "optim.grad_clip": _NON_NEGATIVE,  # 0 disables clipping
    "data.segment_seconds": _POSITIVE, "data.loudness_target_db": _FINITE, "data.gain_augment_db": _NON_NEGATIVE,
    "data.shuffle_seed": _AT_LEAST_0, "data.worker_count": _AT_LEAST_0,
    "train.batch_size": _AT_LEAST_1, "train.num_steps": _AT_LEAST_1, "train.checkpoint_every": _AT_LEAST_1,
    "train.eval_every": _AT_LEAST_0,  # 0: no validation
    "train.log_every": _AT_LEAST_1, "train.seed": _AT_LEAST_0, "train.disc_warmup_steps": _AT_LEAST_0,
    "train.max_consecutive_skips": _AT_LEAST_1,
    "train.floor_check_after": _AT_LEAST_0, "train.divergence_factor": _DIVERGENCE,
    "train.keep_checkpoints": _AT_LEAST_1,
    "train.stop_signals": (_signal_name, "a signal name such as SIGTERM, SIGINT, SIGUSR1 or SIGUSR2"),
    "mesh.shape": (_mesh_axis, "a device count ≥ 1, or -1 for the remaining devices"),
    "mesh.fsdp_min_size": _AT_LEAST_0,
}


def _violations(config: Config) -> list[str]:
    problems = []
    for section in dataclasses.fields(config):
        part = getattr(config, section.name)
        for field in dataclasses.fields(part):
            key = f"{section.name}.{field.name}"
            if key not in RANGES:
                continue
            check, wanted = RANGES[key]
            value = getattr(part, field.name)
            items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
            for i, item in items:
                if not check(item):
                    where = key if i is None else f"{key}[{i}]"
                    problems.append(f"{where} = {item!r}: must be {wanted}")
    return problems


def validate(config: Config) -> Config:
    """Raises one ConfigError listing every value out of its range (RANGES), one line each; returns `config`."""
    problems = _violations(config)
    if problems:
        raise ConfigError(f"{len(problems)} config value{'s' if len(problems) > 1 else ''} out of range:\n  "
                          + "\n  ".join(problems))
    return config
