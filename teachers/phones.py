"""The offline content teacher: frame-level phone posteriorgrams from PocketSphinx, on the codec's 50 Hz grid.

HuBERT is the paper's content teacher; where the model hub is out of reach, a random-weight HuBERT carries no
linguistic information at all (its level-1 phone probe stays at chance). PocketSphinx's US-English model ships
inside its wheel, so phones are available offline: forced alignment to the transcript when the utterance has one
(jaxcodec eval's aligner), phone-loop decoding when it has none or the alignment fails. Each 20 ms codec frame
gets the fraction of its time each phone occupies (PocketSphinx works in 10 ms frames), mixed with a little of the
uniform distribution, and the result is stored in the shards' `content` field as a [T, len(PHONES)] array; the
provenance says "phones from PocketSphinx, not HuBERT" so no report can mistake it.
"""

from __future__ import annotations

import numpy as np

from jaxcodec import audio
from teachers.errors import TeacherLoadError
from teachers.frames import CODEC_HOP, codec_frames
from teachers.registry import CONTENT, ContentTeacher

# CMUdict's 39 ARPAbet phones (what the en-us dictionary and phone LM use) and silence; PocketSphinx's noise
# segments (+NSN+, +SPN+, +BREATH+, ...) count as silence.
PHONES = ("SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
          "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y",
          "Z", "ZH")
PHONE_INDEX = {phone: i for i, phone in enumerate(PHONES)}
# Label smoothing: 10 % of each frame's mass spread uniformly (Szegedy et al. 2016's ε = 0.1), so a target never
# claims certainty an automatic aligner does not have and no dimension is exactly zero.
LABEL_SMOOTHING = 0.1
SUBFRAMES = 2  # PocketSphinx 10 ms frames per 20 ms codec frame
MODEL_NAME = "pocketsphinx-en-us-phones"
LABEL = "phones from PocketSphinx, not HuBERT"


def phone_id(name: str) -> int:
    """A PocketSphinx phone name → its index in PHONES (noise and unknown names → silence)."""
    return PHONE_INDEX.get(name.upper(), PHONE_INDEX["SIL"])


def posteriorgram(segments: list[tuple[str, float, float]], num_frames: int,
                  smoothing: float = LABEL_SMOOTHING) -> np.ndarray:
    """[(phone, start s, end s)] → [num_frames, len(PHONES)] float32, rows summing to 1: each codec frame's share
    of time per phone (uncovered time is silence), smoothed towards uniform by `smoothing`."""
    frame_seconds = CODEC_HOP / audio.SAMPLE_RATE
    sub_seconds = frame_seconds / SUBFRAMES
    labels = np.full(num_frames * SUBFRAMES, PHONE_INDEX["SIL"], np.int64)
    for name, start, end in segments:
        first, last = int(round(start / sub_seconds)), int(round(end / sub_seconds))
        labels[max(first, 0):min(last, len(labels))] = phone_id(name)
    occupancy = np.zeros((num_frames * SUBFRAMES, len(PHONES)), np.float32)
    occupancy[np.arange(len(labels)), labels] = 1.0
    occupancy = occupancy.reshape(num_frames, SUBFRAMES, len(PHONES)).mean(axis=1)
    return ((1.0 - smoothing) * occupancy + smoothing / len(PHONES)).astype(np.float32)


class PhoneTeacher(ContentTeacher):
    """Phone posteriorgrams [ceil(N/320), len(PHONES)] per utterance (the `content` field), PocketSphinx on CPU."""

    name = "phones"

    @classmethod
    def from_options(cls, options) -> PhoneTeacher:
        return cls()  # the model ships in pocketsphinx's wheel; CPU only, nothing to choose

    def __init__(self):
        from jaxcodec.eval.asr import PocketSphinx
        from jaxcodec.quality import MetricUnavailable

        try:
            self.recogniser = PocketSphinx()
        except MetricUnavailable as err:
            raise TeacherLoadError(f"the phone teacher needs pocketsphinx: {err}") from err
        self.dim = len(PHONES)
        self.aligned = self.decoded = 0  # utterances by target source, for the log

    def provenance(self) -> dict:
        return {"name": self.name, "model": MODEL_NAME, "teacher": LABEL, "layer": "phones", "dim": self.dim,
                "phones": list(PHONES), "label_smoothing": LABEL_SMOOTHING,
                "package_version": _version("pocketsphinx"),
                "targets": "forced alignment to the transcript; phone-loop decoding without one",
                "sample_rate": audio.SAMPLE_RATE, "frame_rate": audio.SAMPLE_RATE / CODEC_HOP}

    def segments(self, wav: np.ndarray, text: str | None) -> list[tuple[str, float, float]]:
        aligned = self.recogniser.align_phones(wav, text) if text else None
        if aligned:
            self.aligned += 1
            return aligned
        self.decoded += 1
        return self.recogniser.decode_phones(wav)

    def features(self, wavs: list[np.ndarray], texts: list[str | None]) -> list[dict[str, np.ndarray]]:
        """The registry interface: {"content": posteriorgram} per waveform."""
        return [{CONTENT: frames} for frames in self(wavs, texts)]

    def __call__(self, wavs: list[np.ndarray], texts: list[str | None]) -> list[np.ndarray]:
        return [posteriorgram(self.segments(wav, text), codec_frames(len(wav)))
                for wav, text in zip(wavs, texts, strict=True)]


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
