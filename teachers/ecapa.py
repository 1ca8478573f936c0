"""A speaker teacher: speechbrain's ECAPA-TDNN speaker encoder (hub model `speechbrain/spkrec-ecapa-voxceleb`).

Gives one 192-d utterance embedding per file (the acoustic-guidance target) and, optionally, frame-level features
(the MFA layer) pooled onto the codec's 50 Hz grid.

Loading. A local directory in the hub's on-disk format is read weights only by default: the hub model's
architecture is built here (ECAPA_TDNN with the hub's kernel sizes and dilations, widths read from the checkpoint's
tensor shapes, an 80-mel Fbank, sentence mean normalisation) and only `embedding_model.ckpt`'s tensors are loaded,
with `torch.load(weights_only=True)`. Its hyperparams.yaml is not read: speechbrain's HyperPyYAML executes the
Python its `!new:` / `!apply:` tags name, so a downloaded folder's yaml is code. `hyperpyyaml=True` (precompute's
`--ecapa-hyperpyyaml`) loads such a folder through `EncoderClassifier.from_hparams` instead, for folders whose
yaml you trust (e.g. a changed architecture). A hub id is loaded through `from_hparams`, the way its users load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.speaker import EncoderClassifier
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import hook_on_loading_state_dict_checkpoint, torch_patched_state_dict_load
from speechbrain.utils.fetching import FetchConfig

from jaxcodec.audio import SAMPLE_RATE
from jaxcodec.data.shards.format import SPEAKER_EMBEDDING, SPEAKER_FRAMES
from teachers.errors import TeacherLoadError
from teachers.fingerprints import weights_sha256
from teachers.frames import CODEC_HOP, chunk_plan, codec_frames
from teachers.hub import hub_reachable, is_local, offline_message
from teachers.registry import SpeakerTeacher

DEFAULT_ECAPA = "speechbrain/spkrec-ecapa-voxceleb"
KIND, FLAG = "ECAPA-TDNN", "--ecapa"  # how errors name the model and the CLI option that chooses it

# The hub model's files (its Pretrainer's loadables plus the yaml that builds the modules).
HYPERPARAMS = "hyperparams.yaml"
EMBEDDING_CKPT = "embedding_model.ckpt"
HUB_FILES = (HYPERPARAMS, EMBEDDING_CKPT, "mean_var_norm_emb.ckpt", "classifier.ckpt", "label_encoder.txt")

# speechbrain's Fbank defaults (lobes/features.py): hop_length 10 ms → 160 samples at 16 kHz, STFT center=True,
# so fbank frame k is centred at sample 160·k. The MFA layer keeps that frame rate (all TDNN strides are 1).
FBANK_HOP = 160
FBANK_PER_CODEC_FRAME = CODEC_HOP // FBANK_HOP  # 2
# Codec frame j is centred at sample 320·j + 160 = fbank frame 2j + 1; a triangle over fbank frames 2j, 2j+1, 2j+2
# has exactly that centre and sums to 1 (a 2× decimation with the [1, 2, 1]/4 anti-alias filter).
TRIANGLE = (0.25, 0.5, 0.25)
FRAME_RATE = SAMPLE_RATE / CODEC_HOP  # 50.0 Hz, the shard frame grid
FRAME_LAYER = "mfa"  # ECAPA_TDNN.mfa: multi-layer feature aggregation, the last frame-level layer before pooling

# Shortest input the model accepts: its convs pad by reflection, which needs more frames than the widest padding
# (block 4: dilation 4 × (kernel 3 − 1) / 2 = 4 frames), i.e. 5 fbank frames = 4 hops → 640 samples (40 ms).
MIN_SAMPLES = 4 * FBANK_HOP
# Long files run in windows with this much context each side: 2 s is 3× the convolutional receptive field of the
# frame features (±65 fbank frames: the first conv's ±2, then 3 Res2Net blocks of 7 chained kernel-3 convs at
# dilations 2, 3, 4: ±7·9). The SE blocks' utterance means are what still makes windows an approximation.
CONTEXT_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class EcapaSize:
    channels: tuple[int, ...]  # ECAPA_TDNN channels: 3 SE-Res2Net blocks after the first TDNN, then the MFA layer
    attention_channels: int  # attentive statistics pooling bottleneck
    speakers: int  # classifier outputs (VoxCeleb training speakers for the hub model)


SIZES = {
    # The hub model: hyperparams.yaml of speechbrain/spkrec-ecapa-voxceleb (7205 VoxCeleb1+2 speakers).
    "base": EcapaSize(channels=(1024, 1024, 1024, 1024, 3072), attention_channels=128, speakers=7205),
    # Same structure, small widths (Res2Net scale 8 needs channels divisible by 8), same 192-d embedding.
    "tiny": EcapaSize(channels=(32, 32, 32, 32, 96), attention_channels=16, speakers=16),
}
EMBEDDING_DIM = 192  # lin_neurons of the hub model; shards store `speaker_embedding` [192]
# What the hub's hyperparams.yaml fixes and a checkpoint's tensor shapes do not show (the weights-only load builds
# the model from these): per-layer kernel sizes and dilations of ECAPA_TDNN.
HUB_KERNEL_SIZES = (5, 3, 3, 3, 1)
HUB_DILATIONS = (1, 2, 3, 4, 1)

# The hub model's hyperparams.yaml, reproduced key for key; only the widths and speaker count vary with size.
HUB_HYPERPARAMS = """\
# ############################################################################
# Model: ECAPA big for Speaker verification
# ############################################################################

# Feature parameters
n_mels: 80

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-ecapa-voxceleb

# Output parameters
out_n_neurons: {speakers}

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {attention_channels}
    lin_neurons: {lin_neurons}

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {lin_neurons}
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder


pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


class EcapaTeacher(SpeakerTeacher):
    """ECAPA-TDNN embeddings (and optional MFA frames on the 50 Hz grid) for lists of 16 kHz mono waveforms.

    `savedir` is speechbrain's collection directory. By default there is none: a local directory is read in place
    and a hub model straight from the Hugging Face cache, so nothing is written next to the caller. speechbrain
    reuses whatever a savedir already holds, so give each hub model its own savedir.
    """

    name = "ecapa"

    @classmethod
    def from_options(cls, options) -> EcapaTeacher:
        """precompute's --ecapa (hub id or directory), --ecapa-frames, --ecapa-hyperpyyaml, --device."""
        return cls(options.ecapa, device=options.device, frames=options.ecapa_frames,
                   hyperpyyaml=options.ecapa_hyperpyyaml)

    def __init__(self, source: str = DEFAULT_ECAPA, *, device: str = "cpu", frames: bool = False,
                 savedir: str | None = None, max_chunk_seconds: float = 60.0, hyperpyyaml: bool = False):
        self.local = is_local(source)
        self.source = str(Path(source).expanduser().resolve()) if self.local else source
        self.device = device
        self.frames = frames
        self.max_samples = int(max_chunk_seconds * SAMPLE_RATE)
        self.context_samples = int(CONTEXT_SECONDS * SAMPLE_RATE)
        if self.max_samples <= 2 * self.context_samples + CODEC_HOP:
            raise ValueError(f"max_chunk_seconds={max_chunk_seconds} leaves no room between the "
                             f"{CONTEXT_SECONDS} s of context each side of a window")
        if self.local and not hyperpyyaml:
            self.encoder = _load_weights_only(source, Path(self.source), device)
        else:
            self.encoder = _load_encoder(source, self.source, self.local, device, savedir)
        self._mfa_bct: torch.Tensor | None = None  # the MFA output of the last forward (frames=True)
        if frames:
            self.encoder.mods.embedding_model.mfa.register_forward_hook(self._keep_mfa)
        self.dim, frame_dim = self._probe_dims()
        self.frame_dim = frame_dim if frames else None
        self.revision = None if self.local else _hub_revision(source)
        self.weights_sha256 = weights_sha256(self._fingerprinted_modules())

    def provenance(self) -> dict:
        return {"name": self.name, "model": self.source, "revision": self.revision,
                "weights_sha256": self.weights_sha256,
                "dim": self.dim, "frame_dim": self.frame_dim, "frame_layer": FRAME_LAYER if self.frames else None,
                "sample_rate": SAMPLE_RATE, "frame_rate": FRAME_RATE}

    def features(self, wavs: list[np.ndarray], texts: list[str | None] | None = None) -> list[dict[str, np.ndarray]]:
        """The registry interface: the same dicts as a call (transcripts are not used)."""
        return self(wavs)

    def __call__(self, wavs: list[np.ndarray]) -> list[dict]:
        """One dict per waveform: `speaker_embedding` float32 [dim], plus `speaker_frames` float32
        [ceil(N/320), frame_dim].

        Each utterance runs at its own length, never zero-padded into a batch with longer ones: speechbrain's
        ECAPA is not padding-invariant. Its convs pad by reflection at the tensor's end, so the last frames of a
        padded utterance mix in padding, the SE blocks' utterance means then carry that into every frame, and
        InputNormalization turns the padding into −mean rather than zeros. Measured with `encode_batch` on random
        tiny and base models: 0.7 s and 1.3 s utterances padded to 2.05 s with relative wav_lens give embeddings
        12–82 % (max abs diff / max abs value) away from the same utterances alone, against a 1e-4 contract; see
        tests/teachers/test_ecapa.py. Utterances of equal length need no padding and do share a batch. ECAPA
        costs ~1/10 of HuBERT, so running alone is cheap.
        """
        wavs = [_as_mono_float32(wav, index) for index, wav in enumerate(wavs)]
        results: list[dict | None] = [None] * len(wavs)
        fits = [i for i, wav in enumerate(wavs) if len(wav) <= self.max_samples]
        for group in _equal_length_groups(wavs, fits):
            for index, result in zip(group, self._run(np.stack([wavs[i] for i in group])), strict=True):
                results[index] = result
        for index in sorted(set(range(len(wavs))) - set(fits)):
            results[index] = self._run_long(wavs[index])
        return results

    def _run(self, wav_bn: np.ndarray) -> list[dict]:
        """The forward of `EncoderClassifier.encode_batch` (no embedding normalisation) on equal-length wavs."""
        mods = self.encoder.mods
        wavs = torch.from_numpy(wav_bn).to(self.device)
        full = torch.ones(len(wavs), device=self.device)  # relative lengths: nothing is padding
        with torch.inference_mode():
            feats = mods.compute_features(wavs)
            feats = mods.mean_var_norm(feats, full)
            embeddings = mods.embedding_model(feats, full)[:, 0]  # [B, 1, dim] → [B, dim]
        results = [{SPEAKER_EMBEDDING: emb} for emb in embeddings.float().cpu().numpy()]
        if self.frames:
            mfa_bct, self._mfa_bct = self._mfa_bct, None  # don't keep [B, C, T] alive between calls
            for result, mfa_ct in zip(results, mfa_bct.float().cpu().numpy(), strict=True):
                result[SPEAKER_FRAMES] = pool_mfa_frames(mfa_ct, wav_bn.shape[1])
        return results

    def _run_long(self, wav: np.ndarray) -> dict:
        """A file longer than max_chunk_seconds, in windows from `chunk_plan` so the model never holds it whole.

        Frames: each window provides the frames it keeps (context excluded), which tile the file's grid.
        Embedding: the mean of the windows' embeddings weighted by the duration each window keeps. An
        approximation: ECAPA's attentive pooling over the whole file is not a mean of per-window poolings, and
        the SE blocks see window-level rather than file-level means.
        """
        plan = chunk_plan(len(wav), self.max_samples, self.context_samples)
        outputs = [self._run(wav[None, chunk.start:chunk.stop])[0] for chunk in plan]
        kept = [chunk.keep_stop - chunk.keep_start for chunk in plan]  # codec frames = duration / 20 ms
        embedding = np.average([out[SPEAKER_EMBEDDING] for out in outputs], axis=0, weights=kept)
        result = {SPEAKER_EMBEDDING: embedding.astype(np.float32)}
        if self.frames:
            result[SPEAKER_FRAMES] = np.concatenate([
                out[SPEAKER_FRAMES][chunk.keep_start - chunk.offset:chunk.keep_stop - chunk.offset]
                for chunk, out in zip(plan, outputs, strict=True)])
        return result

    def _keep_mfa(self, module, inputs, output):
        self._mfa_bct = output

    def _probe_dims(self) -> tuple[int, int]:
        """Embedding and MFA widths, read from the model by running it once on a short silence."""
        silence = np.zeros((1, SAMPLE_RATE // 10), np.float32)
        captured = {}
        hook = self.encoder.mods.embedding_model.mfa.register_forward_hook(
            lambda module, inputs, output: captured.setdefault("mfa", output))
        try:
            embedding = self._run(silence)[0][SPEAKER_EMBEDDING]
        finally:
            hook.remove()
        return int(embedding.shape[-1]), int(captured["mfa"].shape[1])

    def _fingerprinted_modules(self) -> torch.nn.Module:
        """The weights that determine the features: the embedding model, plus mean_var_norm if it has state."""
        mods = self.encoder.mods
        if not mods.mean_var_norm.state_dict():
            return mods.embedding_model
        return torch.nn.ModuleDict({"mean_var_norm": mods.mean_var_norm, "embedding_model": mods.embedding_model})



def pool_mfa_frames(mfa_ct: np.ndarray, num_samples: int) -> np.ndarray:
    """MFA frames [C, T] at 100 Hz (frame k centred at sample 160·k) → [codec_frames(N), C] on the 50 Hz grid.

    Codec frame j (centred at sample 320·j + 160) is 0.25·f[2j] + 0.5·f[2j+1] + 0.25·f[2j+2]. A file of N samples
    has N // 160 + 1 fbank frames; when N is not a multiple of 320 the last codec frame reaches one or two indices
    past them, which repeat the last fbank frame."""
    num_frames = codec_frames(num_samples)
    last = mfa_ct.shape[1] - 1
    centre = FBANK_PER_CODEC_FRAME * np.arange(num_frames) + 1
    pooled = sum(weight * mfa_ct[:, np.minimum(centre + shift, last)]
                 for weight, shift in zip(TRIANGLE, (-1, 0, 1), strict=True))
    return np.ascontiguousarray(pooled.T, dtype=np.float32)


def _as_mono_float32(wav, index: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"utterance {index}: expected a mono waveform [N], got shape {wav.shape}")
    if len(wav) < MIN_SAMPLES:
        raise ValueError(f"utterance {index}: {len(wav)} samples is shorter than the {MIN_SAMPLES} samples "
                         f"({1000 * MIN_SAMPLES / SAMPLE_RATE:.0f} ms) ECAPA-TDNN accepts")
    return wav


def _equal_length_groups(wavs: list[np.ndarray], indices: list[int]) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for index in indices:
        groups.setdefault(len(wavs[index]), []).append(index)
    return list(groups.values())


# ---- loading -----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WeightsOnlyEncoder:
    """What EcapaTeacher uses of an EncoderClassifier: its modules (compute_features, mean_var_norm,
    embedding_model), here built in code rather than by a yaml."""
    mods: torch.nn.ModuleDict


def _load_weights_only(given: str, directory: Path, device: str) -> WeightsOnlyEncoder:
    """The hub model's architecture built here, `embedding_model.ckpt` loaded with torch.load(weights_only=True)
    (speechbrain's key-renaming hooks applied, as its own loader does); no yaml is read, so no code runs."""
    _check_directory(given, directory)
    path = directory / EMBEDDING_CKPT
    if not path.is_file():
        raise TeacherLoadError(f"cannot load {KIND} '{given}': missing file {EMBEDDING_CKPT} ({path})")
    try:
        state = hook_on_loading_state_dict_checkpoint(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # torch's UnpicklingError, RuntimeError, EOFError, ...
        raise _load_error(given, str(directory), error) from error
    if not isinstance(state, dict):
        raise TeacherLoadError(f"cannot load {KIND} '{given}': {EMBEDDING_CKPT} is not a state dict")
    width = _hub_widths(given, state)
    model = ECAPA_TDNN(input_size=width["n_mels"], channels=width["channels"], kernel_sizes=list(HUB_KERNEL_SIZES),
                       dilations=list(HUB_DILATIONS), attention_channels=width["attention_channels"],
                       lin_neurons=width["lin_neurons"])
    _check_complete(given, model, set(state))
    try:
        model.load_state_dict(state, strict=False)  # missing tensors refused above; extras ignored, as speechbrain does
    except RuntimeError as error:  # a tensor whose shape the hub architecture does not have
        raise _load_error(given, str(directory), error) from error
    mods = torch.nn.ModuleDict({
        "compute_features": Fbank(n_mels=width["n_mels"]),  # the hub yaml's Fbank, otherwise speechbrain defaults
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": model})
    return WeightsOnlyEncoder(mods.to(device).eval())


def _hub_widths(given: str, state: dict) -> dict:
    """The hub architecture's widths from the checkpoint's tensor shapes (the first TDNN's input is the mel count;
    each block's first conv gives its channels; attention and embedding widths from the pooling and the last fc)."""
    def rows(key: str, axis: int = 0) -> int:
        if key not in state or not hasattr(state[key], "shape") or len(state[key].shape) <= axis:
            raise TeacherLoadError(f"cannot load {KIND} '{given}': {EMBEDDING_CKPT} lacks {key} of the hub "
                                   f"architecture (not an ECAPA-TDNN of {DEFAULT_ECAPA}'s structure)")
        return int(state[key].shape[axis])

    return {"n_mels": rows("blocks.0.conv.conv.weight", 1),
            "channels": [rows("blocks.0.conv.conv.weight"), *(rows(f"blocks.{i}.tdnn1.conv.conv.weight")
                                                              for i in (1, 2, 3)), rows("mfa.conv.conv.weight")],
            "attention_channels": rows("asp.tdnn.conv.conv.weight"), "lin_neurons": rows("fc.conv.weight")}


def _load_encoder(given: str, source: str, local: bool, device: str, savedir: str | None) -> EncoderClassifier:
    """`EncoderClassifier.from_hparams`, the way users load the model, with errors a user can act on.

    speechbrain fetches hyperparams.yaml from `source`, but each checkpoint from the path the yaml gives its
    Pretrainer: `<pretrained_path>/embedding_model.ckpt`, and the hub's yaml says `pretrained_path:
    speechbrain/spkrec-ecapa-voxceleb`, a hub id. So a local directory overrides pretrained_path with itself, and
    fetching runs with allow_network=False: a yaml that still points elsewhere fails instead of downloading.
    overwrite=True re-links files into a user's savedir, which otherwise keeps (stale) files from an earlier
    source. A hub id is tried from the local cache first (no network, no update checks), then online.
    """
    if local:
        overrides = _local_overrides(given, Path(source))
        return _from_hparams(given, source, device, savedir, overrides, FetchConfig(allow_network=False,
                                                                                     overwrite=True))
    if given.startswith(("/", "./", "../", "~")) or given.count("/") > 1:
        raise TeacherLoadError(f"{KIND} source '{given}' is neither an existing directory nor a hub id")
    try:
        return _from_hparams(given, source, device, savedir, {}, FetchConfig(allow_network=False))
    except TeacherLoadError as cached_error:
        if not _is_offline(cached_error.__cause__):
            raise
    if not hub_reachable():
        raise TeacherLoadError(offline_message(KIND, given, FLAG))
    return _from_hparams(given, source, device, savedir, {}, FetchConfig())


def _check_directory(given: str, directory: Path) -> None:
    if not directory.is_dir():
        raise TeacherLoadError(f"{KIND} source '{given}' is a file; pass the model directory ({', '.join(HUB_FILES)})")


def _local_overrides(given: str, directory: Path) -> dict:
    _check_directory(given, directory)
    hyperparams = directory / HYPERPARAMS
    if not hyperparams.is_file():
        raise TeacherLoadError(f"{KIND} directory '{directory}' has no {HYPERPARAMS}; expected the files of "
                               f"{DEFAULT_ECAPA}: {', '.join(HUB_FILES)}")
    # A yaml without the key (its own absolute paths) is loaded as it is: overriding a missing key is an error.
    declares_path = re.search(r"^pretrained_path\s*:", hyperparams.read_text(encoding="utf-8"), re.MULTILINE)
    return {"pretrained_path": str(directory)} if declares_path else {}


def _from_hparams(given: str, source: str, device: str, savedir: str | None, overrides: dict,
                  fetch_config: FetchConfig) -> EncoderClassifier:
    try:
        encoder = EncoderClassifier.from_hparams(source=source, savedir=savedir, run_opts={"device": device},
                                                 overrides=overrides, fetch_config=fetch_config)
    except Exception as error:  # speechbrain, hyperpyyaml, huggingface_hub and torch each raise their own
        raise _load_error(given, source, error) from error
    path = encoder.hparams.pretrainer.paths.get("embedding_model")
    if path is not None:
        _check_complete(given, encoder.mods.embedding_model, set(torch_patched_state_dict_load(path, "cpu")))
    encoder.eval()
    return encoder


def _load_error(given: str, source: str, error: Exception) -> TeacherLoadError:
    if not is_local(source) and _is_offline(error):
        return TeacherLoadError(offline_message(KIND, given, FLAG))
    if isinstance(error, FileNotFoundError) and error.filename:
        return TeacherLoadError(f"cannot load {KIND} '{given}': missing file {Path(error.filename).name} "
                                f"({error.filename})")
    return TeacherLoadError(f"cannot load {KIND} '{given}': {type(error).__name__}: {_one_line(error)}")


def _check_complete(given: str, model: torch.nn.Module, stored: set[str]) -> None:
    """speechbrain transfers embedding_model.ckpt non-strictly: tensors missing from the file would stay randomly
    initialised with only a log warning. A teacher with random layers would poison training silently, so refuse."""
    missing = sorted(name for name in model.state_dict()
                     if name not in stored and not name.endswith("num_batches_tracked"))  # unused in eval
    if missing:
        raise TeacherLoadError(f"cannot load {KIND} '{given}': {EMBEDDING_CKPT} lacks {len(missing)} tensors of "
                               f"the model (first: {missing[0]}); the checkpoint is not of this architecture")


def _is_offline(error: BaseException | None) -> bool:
    """True when the cause is a missing network or cache (huggingface_hub's LocalEntryNotFoundError, its
    OfflineModeIsEnabled, or a connection error underneath), anywhere in the exception chain."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    while error is not None:
        if isinstance(error, LocalEntryNotFoundError | OfflineModeIsEnabled | ConnectionError):
            return True
        if type(error).__name__ in ("ConnectError", "ConnectTimeout"):  # httpx's, without importing httpx
            return True
        error = error.__cause__ or error.__context__
    return False


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] if text else type(error).__name__


def _hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot the model was loaded from (…/snapshots/<commit>/hyperparams.yaml)."""
    from huggingface_hub import try_to_load_from_cache

    with contextlib.suppress(Exception):
        path = try_to_load_from_cache(repo_id=repo_id, filename=HYPERPARAMS)
        if isinstance(path, str):
            match = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", path)
            return match.group(1) if match else None
    return None


# ---- random models in the hub's format (tests, benchmark, offline demo) ------------------------------------------

def save_random_ecapa(directory, *, size: str = "tiny", seed: int = 0) -> Path:
    """Writes a randomly initialised ECAPA-TDNN in the hub model's exact on-disk format: its hyperparams.yaml (with
    `pretrained_path: speechbrain/spkrec-ecapa-voxceleb`, as downloaded) and the files its Pretrainer loads,
    written by speechbrain's own savers. Same seed → same weights."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    spec = SIZES[size]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    yaml_text = HUB_HYPERPARAMS.format(speakers=spec.speakers, channels=list(spec.channels),
                                       attention_channels=spec.attention_channels, lin_neurons=EMBEDDING_DIM)
    with torch.random.fork_rng(devices=[]):  # seed the weights without moving the caller's generator
        torch.manual_seed(seed)
        hparams = load_hyperpyyaml(yaml_text)  # the very modules the yaml builds, default (random) initialisation
        embedding_norm = hparams["mean_var_norm_emb"]
        embedding_norm.glob_mean = 0.1 * torch.randn(EMBEDDING_DIM)
        embedding_norm.glob_std = torch.ones(EMBEDDING_DIM)  # unused: std_norm is False, as in the hub model
        embedding_norm.count = spec.speakers
    (directory / HYPERPARAMS).write_text(yaml_text, encoding="utf-8")
    torch.save(hparams["embedding_model"].state_dict(), directory / EMBEDDING_CKPT)
    torch.save(hparams["classifier"].state_dict(), directory / "classifier.ckpt")
    embedding_norm._save(directory / "mean_var_norm_emb.ckpt")  # speechbrain's saver for InputNormalization
    labels = CategoricalEncoder()
    labels.update_from_iterable(f"id{10001 + i}" for i in range(spec.speakers))  # VoxCeleb speaker id style
    labels.save(directory / "label_encoder.txt")
    return directory
