"""The semantic teacher: HuBERT (transformers) features on the codec's 50 Hz frame grid.

Frame alignment. HuBERT's convolutional front end has a 400-sample receptive field and a 320-sample stride and no
padding, so N samples give floor((N − 400) / 320) + 1 frames, frame i covering samples [320i, 320i + 400); the
codec gives ceil(N / 320) frames, frame i covering [320i, 320i + 320). We pad the waveform with 40 zeros on each side
(`EDGE_PAD`), which shifts HuBERT's frame i to [320i − 40, 320i + 360): centred on sample 320i + 160, the centre of
codec frame i. That gives floor(N / 320) frames; when N is not a multiple of 320 the last codec frame repeats the
last HuBERT frame. So the stored features always have exactly ceil(N / 320) rows, row i aligned with codec frame i.

Padding. Utterances of different lengths are batched with zero padding and an attention mask. transformers masks
the transformer (padded frames zeroed before the positional convolution, masked keys in attention), but HuBERT
base's first convolution is followed by a GroupNorm with one group per channel: it normalises every channel over
*time*, so padding would change every frame of a padded utterance. `_MaskedGroupNormConv` takes those statistics
over each utterance's own frames only; with it a padded batch gives each utterance the features it gets alone.

Long files run in overlapping windows (`teachers.frames.chunk_plan`), so attention memory stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from jaxcodec import audio
from teachers.errors import TeacherLoadError
from teachers.fingerprints import weights_sha256
from teachers.frames import CODEC_HOP, chunk_plan, codec_frames, fit_frames
from teachers.hub import hub_reachable, is_local, offline_message
from teachers.registry import CONTENT, ContentTeacher

DEFAULT_HUBERT = "facebook/hubert-base-ls960"
DEFAULT_LAYER = "9"  # SpeechTokenizer's semantic teacher: the output of HuBERT-base's 9th transformer layer.
EDGE_PAD = 40  # (400 − 320) / 2 samples on each side centre HuBERT's frames on the codec's (module docstring).
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor's zero-mean unit-variance normalisation epsilon.
MAX_CHUNK_SECONDS = 40.0  # longest window given to HuBERT at once (LibriSpeech's longest utterance is ~35 s).
CHUNK_CONTEXT_SECONDS = 2.0  # context on each side of a window whose frames come from its neighbour.
MAX_BATCH_SECONDS = 160.0  # padded audio per forward pass (memory bound).

# Random checkpoints in the hub's on-disk format, for tests, benchmarks and offline demos.
_SIZES = {
    "base": {},  # transformers' HubertConfig defaults are facebook/hubert-base-ls960's architecture
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
}


class _MaskedGroupNormConv(nn.Module):
    """HuBERT's first conv layer with its per-channel GroupNorm taken over each utterance's valid frames only.
    Attribute names match the wrapped layer's, so state-dict keys are unchanged."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.conv, self.layer_norm, self.activation = layer.conv, layer.layer_norm, layer.activation
        self.valid_frames: torch.Tensor | None = None  # [B] frames of each utterance after this conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)  # [B, C, T]
        if self.valid_frames is None:
            return self.activation(self.layer_norm(h))
        mask = (torch.arange(h.shape[-1], device=h.device)[None, :] < self.valid_frames[:, None])[:, None, :]
        mask = mask.to(h.dtype)
        count = self.valid_frames.to(h.dtype)[:, None, None]
        mean = (h * mask).sum(-1, keepdim=True) / count
        var = (((h - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        h = (h - mean) / torch.sqrt(var + self.layer_norm.eps)
        h = h * self.layer_norm.weight[None, :, None] + self.layer_norm.bias[None, :, None]
        return self.activation(h * mask)


def _conv_out(length: torch.Tensor | int, kernel: int, stride: int):
    return (length - kernel) // stride + 1


RANDOM_PREFIX = "random:"  # --hubert random:base[:SEED]


def random_hubert(source: str, out: Path) -> tuple[str, str]:
    """`random:SIZE[:SEED]` → a HuBERT of that architecture with seeded random weights, saved once under
    OUT/teachers/ in the hub's format; returns (its directory, the label recorded in the provenance)."""
    parts = source[len(RANDOM_PREFIX):].split(":")
    size, seed = parts[0] or "base", int(parts[1]) if len(parts) > 1 else 0
    directory = Path(out) / "teachers" / f"hubert-{size}-random-seed{seed}"
    if not (directory / "config.json").is_file():
        save_random_hubert(directory, size=size, seed=seed)
    return str(directory), f"HuBERT-{size} architecture, random weights (seed {seed}), NOT pretrained"


class HubertTeacher(ContentTeacher):
    """HuBERT features [ceil(N/320), dim] per utterance, from one hidden layer or the mean of all of them."""

    name = "hubert"

    @classmethod
    def from_options(cls, options) -> HubertTeacher:
        """precompute's --hubert (hub id, directory, or random:SIZE[:SEED]), --hubert-layer, --device, --half."""
        half = options.half if options.half is not None else options.device.startswith("cuda")
        source, random_label = options.hubert, None
        if source.startswith(RANDOM_PREFIX):  # an offline stand-in: the architecture with seeded random weights
            source, random_label = random_hubert(source, options.out)
        teacher = cls(source, layer=options.hubert_layer, device=options.device,
                      dtype=torch.float16 if half else torch.float32, max_batch_seconds=options.batch_seconds)
        teacher.random_init = random_label
        return teacher

    def __init__(self, source: str = DEFAULT_HUBERT, *, layer: str = DEFAULT_LAYER, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, max_chunk_seconds: float = MAX_CHUNK_SECONDS,
                 chunk_context_seconds: float = CHUNK_CONTEXT_SECONDS, max_batch_seconds: float = MAX_BATCH_SECONDS):
        self.source = str(Path(source).expanduser().resolve()) if is_local(source) else source
        self.model, self.do_normalize, self.revision = _load(source)
        config = self.model.config
        if int(np.prod(config.conv_stride)) != CODEC_HOP:
            raise TeacherLoadError(f"HuBERT '{source}' has a {int(np.prod(config.conv_stride))}-sample frame hop; "
                                   f"the codec needs {CODEC_HOP}")
        self.num_layers = config.num_hidden_layers
        self.layer = str(layer)
        if self.layer != "avg" and not (self.layer.isdigit() and 0 <= int(self.layer) <= self.num_layers):
            raise TeacherLoadError(f"HuBERT layer must be 0..{self.num_layers} or 'avg', got {layer!r}")
        self.dim = config.hidden_size
        self.weights_sha256 = weights_sha256(self.model)
        self.random_init: str | None = None  # the label of a random-weight stand-in (from_options), never hidden
        self.device, self.dtype = torch.device(device), dtype
        self.model.to(self.device, dtype).eval()
        self._first_conv = None
        if config.feat_extract_norm == "group":
            convs = self.model.feature_extractor.conv_layers
            self._first_conv = convs[0] = _MaskedGroupNormConv(convs[0])
        sr = audio.SAMPLE_RATE
        self.max_chunk_samples = int(max_chunk_seconds * sr)
        self.context_samples = int(chunk_context_seconds * sr)
        self.max_batch_samples = max(int(max_batch_seconds * sr), self.max_chunk_samples + 2 * EDGE_PAD)

    def provenance(self) -> dict:
        return {
            "name": self.name,
            "model": self.source,
            "revision": self.revision,
            "weights_sha256": self.weights_sha256,
            "layer": self.layer,
            "num_layers": self.num_layers,
            "dim": self.dim,
            "do_normalize": self.do_normalize,
            "edge_pad": EDGE_PAD,
            "sample_rate": audio.SAMPLE_RATE,
            "frame_rate": audio.SAMPLE_RATE / CODEC_HOP,
        } | ({"random_init": self.random_init} if self.random_init else {})

    def model_input(self, wav: np.ndarray) -> np.ndarray:
        """What the network sees for one utterance: normalised if the checkpoint's feature extractor says so (over
        the utterance alone, never its padding), then EDGE_PAD zeros on each side."""
        wav = np.asarray(wav, dtype=np.float32)
        if self.do_normalize:
            wav = (wav - wav.mean()) / np.sqrt(wav.var() + NORM_EPS)
        return np.pad(wav, EDGE_PAD)

    def features(self, wavs: list[np.ndarray], texts: list[str | None] | None = None) -> list[dict[str, np.ndarray]]:
        """The registry interface: {"content": [ceil(N/320), dim]} per waveform (transcripts are not used)."""
        return [{CONTENT: frames} for frames in self(wavs)]

    def __call__(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Mono float32 16 kHz waveforms → float32 [ceil(N/320), dim] each."""
        pieces = []  # (utterance, chunk, padded input)
        for u, wav in enumerate(wavs):
            padded = self.model_input(wav)
            for chunk in chunk_plan(len(wav), self.max_chunk_samples, self.context_samples):
                pieces.append((u, chunk, padded[chunk.start:chunk.stop + 2 * EDGE_PAD]))
        outputs: list[list[np.ndarray]] = [[] for _ in wavs]
        for group in _budget_groups(pieces, self.max_batch_samples):
            frames = self._forward([piece for _, _, piece in group])
            for (u, chunk, _), feats in zip(group, frames, strict=True):
                first = chunk.keep_start - chunk.offset
                outputs[u].append(feats[first:first + chunk.keep_stop - chunk.keep_start])
        return [fit_frames(np.concatenate(parts), codec_frames(len(wav))) for parts, wav in zip(outputs, wavs,
                                                                                                 strict=True)]

    @torch.inference_mode()
    def _forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        lengths = torch.tensor([len(x) for x in inputs])
        batch = torch.zeros(len(inputs), int(lengths.max()))
        for i, x in enumerate(inputs):
            batch[i, :len(x)] = torch.from_numpy(x)
        sample_mask = torch.arange(batch.shape[1])[None, :] < lengths[:, None]
        config = self.model.config
        if self._first_conv is not None:
            first = _conv_out(lengths, config.conv_kernel[0], config.conv_stride[0])
            self._first_conv.valid_frames = first.to(self.device)
        out = self.model(batch.to(self.device, self.dtype), attention_mask=sample_mask.to(self.device).long(),
                         output_hidden_states=True)
        hidden = out.hidden_states
        feats = torch.stack(hidden).mean(0) if self.layer == "avg" else hidden[int(self.layer)]
        feats = feats.float().cpu().numpy()
        frames = self.model._get_feat_extract_output_lengths(lengths).tolist()
        return [feats[i, :n] for i, n in enumerate(frames)]


def _budget_groups(pieces: list, max_samples: int) -> list[list]:
    """Groups pieces (sorted by length, longest first) so that count × longest ≤ max_samples per group."""
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][2]))
    groups, current = [], []
    for i in order:
        longest = len(pieces[current[0]][2]) if current else len(pieces[i][2])
        if current and (len(current) + 1) * longest > max_samples:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return [[pieces[i] for i in group] for group in groups]


def _load(source: str):
    """HubertModel.from_pretrained on a hub id or a `save_pretrained` directory, with its feature extractor's
    normalisation setting (absent preprocessor config: no normalisation, as fairseq's HuBERT base was trained)."""
    from transformers import HubertModel, Wav2Vec2FeatureExtractor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load bar would break precompute's own progress line
    local = is_local(source)
    if local and not (Path(source).expanduser() / "config.json").is_file():
        raise TeacherLoadError(f"HuBERT directory '{source}' has no config.json (expected a transformers "
                               f"save_pretrained folder)")
    # A hub id: the local cache first; the network only when the model is not there and the hub answers.
    cached = not local
    try:
        model = HubertModel.from_pretrained(source, local_files_only=cached)
    except OSError as err:
        if local:
            raise TeacherLoadError(f"cannot load HuBERT from '{source}': {' '.join(str(err).split())}") from None
        if not hub_reachable():
            raise TeacherLoadError(offline_message("HuBERT", source, "--hubert")) from None
        cached = False
        model = HubertModel.from_pretrained(source)
    try:
        do_normalize = bool(Wav2Vec2FeatureExtractor.from_pretrained(source, local_files_only=cached).do_normalize)
    except OSError:
        do_normalize = False
    revision = getattr(model.config, "_commit_hash", None)
    return model, do_normalize, revision


def save_random_hubert(directory: str | Path, *, size: str = "tiny", seed: int = 0,
                       do_normalize: bool = True) -> Path:
    """Writes a randomly initialised HuBERT in the hub's on-disk format (`save_pretrained`: config.json,
    model.safetensors, preprocessor_config.json). 'base' is hubert-base-ls960's architecture; 'tiny' keeps its
    conv strides (320-sample hop) at toy widths."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, got {size!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**_SIZES[size])).eval()
    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=audio.SAMPLE_RATE, padding_value=0.0,
                             do_normalize=do_normalize, return_attention_mask=False).save_pretrained(directory)
    return directory
