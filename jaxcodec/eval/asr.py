"""Intelligibility: word error rate (jiwer) of an ASR system on originals and reconstructions, and the phone
alignments that the content probe trains on.

The offline recogniser is CMU PocketSphinx with the US-English acoustic model, language model and dictionary its
wheel ships (no download). It is a weak recogniser (tens of percent WER on clean read speech), so what it
measures is the WER a reconstruction adds over the original's, not absolute intelligibility. A transformers ASR
model (hub id or local directory; `TransformersASR`) runs in a subprocess (`python -m teachers.asr`), because
jaxcodec never imports torch. Both transcribe lists of files.
"""

from __future__ import annotations

import re

import numpy as np

from jaxcodec.eval.metrics import MetricUnavailable

ASR_SAMPLE_RATE = 16_000  # the en-us model's rate
PHONE_FRAME_SECONDS = 0.01  # PocketSphinx's alignment frames (100 per second)
# Active HMMs per frame (PocketSphinx's default 30000). On a degraded reconstruction the default search spreads
# over the whole lexicon: 2.6 s for a 2.8 s clip, against 0.7 s with this cap; the clean original's transcript is
# the same either way (measured on the bundled corpus, see the note of issue 6).
MAX_HMM_PER_FRAME = 3000


def normalize_text(text: str) -> str:
    """Lower case, apostrophes kept, other punctuation dropped, single spaces: how LibriSpeech-style references
    and PocketSphinx hypotheses are compared."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate (total edits / total reference words), after `normalize_text`."""
    try:
        import jiwer
    except ImportError as err:
        raise MetricUnavailable("WER needs the eval extra: pip install 'jaxcodec[eval]'") from err
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]  # an empty reference has no defined WER
    if not pairs:
        raise ValueError("no non-empty reference transcript to score")
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def _pcm16(wav: np.ndarray) -> bytes:
    return (np.clip(np.asarray(wav, np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()


class PocketSphinx:
    """The en-us recogniser, loaded once (about a second) and reused for every clip."""

    name = "pocketsphinx en-us"

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError as err:
            raise MetricUnavailable("ASR needs the eval extra (pocketsphinx): pip install 'jaxcodec[eval]'") from err
        self._decoder_class = Decoder
        self._recogniser = Decoder(samprate=ASR_SAMPLE_RATE, loglevel="FATAL", maxhmmpf=MAX_HMM_PER_FRAME)
        self._aligner = None

    def _run(self, decoder, wav: np.ndarray) -> None:
        decoder.start_utt()
        decoder.process_raw(_pcm16(wav), full_utt=True)
        decoder.end_utt()

    def transcribe_files(self, paths: list) -> list[str]:
        from tqdm import tqdm

        from jaxcodec import audio

        return [self.transcribe(audio.read(path, ASR_SAMPLE_RATE)[0])
                for path in tqdm(paths, desc="ASR (PocketSphinx)", unit="clip", dynamic_ncols=True)]

    def transcribe(self, wav: np.ndarray) -> str:
        """float waveform at 16 kHz → lower-case words ('' when nothing was recognised)."""
        # The front end's noise and cepstral-mean estimates carry over from the previous clip: reset them, so a
        # clip's transcript does not depend on which clips a worker decoded before it (seen on the bundled corpus).
        self._recogniser.reinit_feat()
        self._run(self._recogniser, wav)
        hypothesis = self._recogniser.hyp()
        return normalize_text(hypothesis.hypstr) if hypothesis is not None else ""

    def align_phones(self, wav: np.ndarray, text: str) -> list[tuple[str, float, float]] | None:
        """Forced alignment of `text`: [(phone, start s, end s)], or None when a word is not in the dictionary or
        the alignment fails."""
        if self._aligner is None:
            self._aligner = self._decoder_class(lm=None, samprate=ASR_SAMPLE_RATE, loglevel="FATAL")
        words = normalize_text(text)
        if not words or any(self._aligner.lookup_word(w) is None for w in words.split()):
            return None
        try:
            self._aligner.set_align_text(words)
            self._run(self._aligner, wav)
            self._aligner.set_alignment()  # second pass: phone- and state-level segmentation
            self._run(self._aligner, wav)
            alignment = self._aligner.get_alignment()
        except RuntimeError:
            return None
        if alignment is None:
            return None
        return [(phone.name, phone.start * PHONE_FRAME_SECONDS, (phone.start + phone.duration) * PHONE_FRAME_SECONDS)
                for word in alignment for phone in word]


class TransformersASR:
    """A transformers `automatic-speech-recognition` pipeline (hub id or local directory), in a subprocess."""

    def __init__(self, model: str, device: str = "cpu"):
        self.name, self.device = model, device

    def transcribe_files(self, paths: list) -> list[str]:
        import json

        from jaxcodec.eval.torch_tools import run_on_files

        def read(out):
            return [normalize_text(t) for t in json.loads(out.read_text())["transcripts"]]

        return run_on_files("teachers.asr", paths, ["--model", self.name, "--device", self.device], ".json", read)


def recogniser(spec: str | None):
    """'pocketsphinx' (offline default), None / 'none', or a transformers model id or directory."""
    if spec in (None, "none"):
        return None
    return PocketSphinx() if spec == "pocketsphinx" else TransformersASR(spec)
