"""Intelligibility: word error rate (jiwer) of an ASR system on originals and reconstructions, and the phone
alignments that the content probe trains on.

The offline recogniser is CMU PocketSphinx with the US-English acoustic model, language model and dictionary its
wheel ships (no download). It is a weak recogniser (tens of percent WER on clean read speech), so what it
measures is the WER a reconstruction adds over the original's, not absolute intelligibility. A transformers ASR
model (hub id or local directory; `TransformersASR`) runs in a subprocess (`python -m teachers.evaluation.asr`), because
jaxcodec never imports torch. Both transcribe lists of files.
"""

from __future__ import annotations

import re

import numpy as np

from jaxcodec.quality import MetricUnavailable

ASR_SAMPLE_RATE = 16_000  # the en-us model's rate
PHONE_FRAME_SECONDS = 0.01  # PocketSphinx's alignment frames (100 per second)
# Active HMMs per frame (PocketSphinx's default 30000). On a degraded reconstruction the default search spreads
# over the whole lexicon: 2.6 s for a 2.8 s clip, against 0.7 s with this cap; the clean original's transcript is
# the same either way (measured on the bundled corpus, see the note of issue 6).
MAX_HMM_PER_FRAME = 3000
# Silence added before and after a clip for forced alignment: without it the search often ends before the last
# word (complete alignments on the bundled corpus: 57 of 140 clips without, 79 with 0.3 s).
ALIGN_PAD_SECONDS = 0.3
PHONE_LOOP_LANGUAGE_WEIGHT = 2.0  # phone-loop decoding's LM weight (PocketSphinx's phoneme-recognition example)


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


def _word_of(name: str) -> str | None:
    """An alignment entry's transcript word ('kept(2)' → 'kept'), or None for silence, noise and sentence marks."""
    if name.startswith(("<", "[", "+")) or name in ("sil", "SIL"):
        return None
    return name.split("(")[0]


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
        self._phone_loop = None

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
        pad = np.zeros(int(ALIGN_PAD_SECONDS * ASR_SAMPLE_RATE), np.float32)
        padded = np.concatenate([pad, np.asarray(wav, np.float32), pad])
        self._aligner.reinit_feat()  # as in transcribe: a clip's alignment must not depend on the previous clip
        try:
            self._aligner.set_align_text(words)
            self._run(self._aligner, padded)
            self._aligner.set_alignment()  # second pass: phone- and state-level segmentation
            self._run(self._aligner, padded)
            alignment = self._aligner.get_alignment()
        except RuntimeError:
            return None
        # The search can end early and return the transcript's first words only: that is a failure, not labels.
        if alignment is None or [_word_of(w.name) for w in alignment if _word_of(w.name)] != words.split():
            return None
        duration = len(wav) / ASR_SAMPLE_RATE

        def clip_time(frame: int) -> float:  # back to the unpadded clip's time line
            return round(min(max(frame * PHONE_FRAME_SECONDS - ALIGN_PAD_SECONDS, 0.0), duration), 2)

        spans = [(phone.name, clip_time(phone.start), clip_time(phone.start + phone.duration))
                 for word in alignment for phone in word]
        return [(name, start, end) for name, start, end in spans if end > start]  # padding-only silence goes

    def decode_phones(self, wav: np.ndarray) -> list[tuple[str, float, float]]:
        """Phone-loop decoding (no transcript): [(phone, start s, end s)] from the en-us phone language model
        (noise and silence segments keep PocketSphinx's names: SIL, +NSN+, ...)."""
        if self._phone_loop is None:
            import os

            from pocketsphinx import get_model_path

            phone_lm = os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin")
            # Beams and language weight as PocketSphinx's phoneme-recognition example (its docs' "allphone" mode).
            self._phone_loop = self._decoder_class(allphone=phone_lm, lw=PHONE_LOOP_LANGUAGE_WEIGHT, beam=1e-20,
                                                   pbeam=1e-20, samprate=ASR_SAMPLE_RATE, loglevel="FATAL")
        self._phone_loop.reinit_feat()  # as in transcribe: a clip's phones must not depend on the previous clip
        self._run(self._phone_loop, wav)
        return [(seg.word, seg.start_frame * PHONE_FRAME_SECONDS, (seg.end_frame + 1) * PHONE_FRAME_SECONDS)
                for seg in self._phone_loop.seg()]


class TransformersASR:
    """A transformers `automatic-speech-recognition` pipeline (hub id or local directory), in a subprocess."""

    def __init__(self, model: str, device: str = "cpu"):
        self.name, self.device = model, device

    def transcribe_files(self, paths: list) -> list[str]:
        import json

        from jaxcodec.eval.torch_subprocess import run_on_files

        def read(out):
            return [normalize_text(t) for t in json.loads(out.read_text())["transcripts"]]

        return run_on_files("teachers.evaluation.asr", paths, ["--model", self.name, "--device", self.device],
                            ".json", read)


def recogniser(spec: str | None):
    """'pocketsphinx' (offline default), None / 'none', or a transformers model id or directory."""
    if spec in (None, "none"):
        return None
    return PocketSphinx() if spec == "pocketsphinx" else TransformersASR(spec)
