"""An offline speaker teacher: resemblyzer's pretrained speaker encoder (GE2E, 3-layer LSTM, 256-d), whose
weights ship inside the `resemblyzer` PyPI package, so it works on a machine with no model hub.

`--speaker-teacher resemblyzer` puts it in ECAPA-TDNN's role: its utterance embedding fills the shards' `speaker`
field, and the provenance records which model produced it, so shards made with it are never mistaken for
ECAPA's. It gives no frame-level features. Its embeddings are L2-normalised and non-negative: raw, their softmax
at τ = 1 is uniform, which is why the speaker role is calibrated (jaxcodec/data/shards/calibration.py).

Each waveform goes through resemblyzer's own `preprocess_wav` (volume normalisation to −30 dBFS and webrtcvad
silence trimming, as the encoder was trained) and `embed_utterance` (mean of L2-normalised embeddings of 1.6 s
partial windows, renormalised). An utterance with no voiced frame left after VAD is embedded untrimmed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from jaxcodec.audio import SAMPLE_RATE
from jaxcodec.data.shards.format import SPEAKER_EMBEDDING
from teachers.errors import TeacherLoadError
from teachers.fingerprints import weights_sha256
from teachers.registry import SpeakerTeacher

KIND = "resemblyzer"
EMBEDDING_DIM = 256  # resemblyzer hparams.model_embedding_size


class ResemblyzerTeacher(SpeakerTeacher):
    name = "resemblyzer"

    @classmethod
    def from_options(cls, options) -> ResemblyzerTeacher:
        if options.ecapa_frames:
            raise TeacherLoadError("--ecapa-frames needs ECAPA-TDNN: resemblyzer gives utterance embeddings only")
        return cls(device=options.device)

    def __init__(self, *, device: str = "cpu"):
        import resemblyzer
        from resemblyzer import VoiceEncoder

        self.device = device
        self.encoder = VoiceEncoder(device=device, verbose=False)
        self.weights_path = Path(resemblyzer.__file__).parent / "pretrained.pt"
        self.version = getattr(resemblyzer, "__version__", None) or _dist_version("resemblyzer")
        self.dim, self.frame_dim = EMBEDDING_DIM, None
        self.weights_sha256 = weights_sha256(self.encoder)
        self.file_sha256 = hashlib.sha256(self.weights_path.read_bytes()).hexdigest() if self.weights_path.exists() \
            else None

    def provenance(self) -> dict:
        return {"name": self.name, "model": KIND, "package_version": self.version,
                "weights_file_sha256": self.file_sha256, "weights_sha256": self.weights_sha256, "dim": self.dim,
                "frame_dim": None, "frame_layer": None, "sample_rate": SAMPLE_RATE}

    def __call__(self, wavs: list[np.ndarray]) -> list[dict]:
        from resemblyzer import preprocess_wav

        results = []
        for wav in wavs:
            wav = np.asarray(wav, np.float32)
            trimmed = preprocess_wav(wav, source_sr=SAMPLE_RATE)
            if len(trimmed) < SAMPLE_RATE // 10:  # VAD left (almost) nothing: embed the normalised original
                trimmed = wav / max(float(np.max(np.abs(wav))), 1e-6) * 0.1
            embedding = self.encoder.embed_utterance(trimmed.astype(np.float32))
            results.append({SPEAKER_EMBEDDING: np.asarray(embedding, np.float32)})
        return results

    def features(self, wavs: list[np.ndarray], texts: list[str | None] | None = None) -> list[dict[str, np.ndarray]]:
        """The registry interface: {"speaker_embedding": [256]} per waveform."""
        return self(wavs)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
