"""Phone error rate (PER): the phones a recogniser hears in a clip against the phones of its transcript.

A content measure whose reference is not PocketSphinx's forced alignment (the labels the phone probe is trained
on, and the offline content teacher's targets): the reference is the transcript looked up word by word in the CMU
pronouncing dictionary (the copy PocketSphinx's wheel ships), the hypothesis is PocketSphinx's phone-loop decoding
of the audio (`asr.PocketSphinx.decode_phones`, no transcript, no word lexicon), and the score is the corpus
Levenshtein distance between the two phone strings over the number of reference phones, as `asr.wer` is for words.

Both strings are compared on the 39 ARPAbet phones, without silence and noise, with runs of one phone merged:
- a pronunciation is one word's citation form; the recogniser hears connected speech, with silences, breaths and
  noises that no reference has, so they are dropped;
- phone-loop decoding can split one long phone into two segments of the same phone (or around a dropped noise
  segment), and a phone doubled across a word boundary ("this some" → S S) is one long sound that the recogniser
  may report once or twice. Merging runs on both sides makes neither case an edit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from jaxcodec.eval import asr
from jaxcodec.quality import MetricUnavailable

# CMUdict's 39 ARPAbet phones: the en-us dictionary's and phone language model's inventory, and teachers/phones.py's
# PHONES without SIL (tests check the two agree; jaxcodec/ does not import teachers/).
ARPABET_PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
                  "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V",
                  "W", "Y", "Z", "ZH")
_PHONE_SET = frozenset(ARPABET_PHONES)
# The pronouncing dictionary in PocketSphinx's wheel (pocketsphinx 5: model/en-us/cmudict-en-us.dict), the one its
# en-us recogniser uses.
DICTIONARY_FILE = ("en-us", "cmudict-en-us.dict")
STRESS_DIGITS = "012"  # CMUdict's vowel stress marks: none, primary, secondary
# Reasons an utterance has no reference phones (counted in the eval's `phone_reference`).
NO_TRANSCRIPT = "no transcript"
WORD_NOT_IN_DICTIONARY = "a word not in the dictionary"


def default_dictionary() -> Path:
    try:
        from pocketsphinx import get_model_path
    except ImportError as err:
        raise MetricUnavailable("PER needs the eval extra (pocketsphinx): pip install 'jaxcodec[eval]'") from err
    return Path(get_model_path(), *DICTIONARY_FILE)


def _base_phone(phone: str) -> str:
    """'AH0' → 'AH': the standard CMUdict marks vowel stress with a digit (the wheel's copy has none)."""
    return phone.upper().rstrip(STRESS_DIGITS)


@functools.lru_cache(maxsize=2)
def _read_dictionary(path: str) -> dict[str, str]:
    """{word: its first pronunciation, as written} ('word(2)' lines, the alternatives, are skipped). Phones are
    parsed per word looked up: the file has 135k lines and an eval needs a few hundred words."""
    words: dict[str, str] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            word, _, phones = line.strip().partition(" ")
            if word and not word.startswith("#") and "(" not in word and word not in words:
                words[word] = phones
    return words


def merge_runs(phones: list[str]) -> list[str]:
    """Consecutive repeats of a phone as one (see the module's docstring for why)."""
    return [p for i, p in enumerate(phones) if i == 0 or p != phones[i - 1]]


class Pronunciations:
    """Transcripts to reference phones through a CMU pronouncing dictionary (PocketSphinx's copy by default)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_dictionary()
        if not self.path.is_file():
            raise MetricUnavailable(f"PER: no pronouncing dictionary at {self.path}")
        self.words = _read_dictionary(str(self.path))

    def pronounce(self, word: str) -> list[str]:
        """A dictionary word's first pronunciation on the 39 phones (KeyError when it is not in the dictionary)."""
        phones = [_base_phone(p) for p in self.words[word].split()]
        unknown = [p for p in phones if p not in _PHONE_SET]
        if not phones or unknown:
            raise ValueError(f"{self.path}: {word!r} has phones outside CMUdict's 39 ({unknown or 'none'}): not a "
                             "CMU pronouncing dictionary")
        return phones

    def missing_words(self, text: str | None) -> list[str]:
        return [w for w in asr.normalize_text(text or "").split() if w not in self.words]

    def reference(self, text: str | None) -> tuple[list[str] | None, str | None]:
        """(reference phones, None), or (None, why unscorable): the words of `asr.normalize_text(text)`, each by
        its first pronunciation, runs merged."""
        words = asr.normalize_text(text or "").split()
        if not words:
            return None, NO_TRANSCRIPT
        if any(w not in self.words for w in words):
            return None, WORD_NOT_IN_DICTIONARY
        return merge_runs([p for w in words for p in self.pronounce(w)]), None


def hypothesis_phones(segments: list[tuple[str, float, float]]) -> list[str]:
    """`decode_phones` segments → the phones heard: silence and noise (SIL, +NSN+, +SPN+, +BREATH+, anything
    outside the 39 phones) dropped, runs merged."""
    return merge_runs([name.upper() for name, _, _ in segments if name.upper() in _PHONE_SET])


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance: the fewest substitutions, insertions and deletions turning `reference` into
    `hypothesis` (each costs 1)."""
    previous = list(range(len(hypothesis) + 1))  # row 0: the empty reference needs j insertions
    for i, ref in enumerate(reference, 1):
        current = [i]  # column 0: i deletions to reach the empty hypothesis
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


@dataclasses.dataclass(frozen=True)
class PhoneErrors:
    edits: int
    reference_phones: int
    utterances: int  # pairs scored

    @property
    def rate(self) -> float | None:
        return self.edits / self.reference_phones if self.reference_phones else None


def corpus_errors(pairs: list[tuple[list[str] | None, list[str] | None]]) -> PhoneErrors:
    """Total edits and reference phones over (reference, hypothesis) pairs; pairs missing either side are left
    out (an unscorable transcript, a clip that was not decoded)."""
    scored = [(r, h) for r, h in pairs if r and h is not None]
    return PhoneErrors(sum(edit_distance(r, h) for r, h in scored), sum(len(r) for r, _ in scored), len(scored))


def per(references: list[list[str] | None], hypotheses: list[list[str] | None]) -> float | None:
    """Corpus phone error rate: total edits / total reference phones (not a mean of per-utterance rates), over
    the pairs with both sides; None when there is none."""
    return corpus_errors(list(zip(references, hypotheses, strict=True))).rate
