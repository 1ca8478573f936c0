"""The human-readable pages of the real corpus (real_corpus.py): README.md (sources, credits, licences, what was
rejected and why, the split, how it was built) and SPEAKERS.txt, both made from corpus.json's contents, so the
pages and the metadata cannot disagree. No timestamps: the same packages give the same pages.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

DEBIAN_POOL = "http://deb.debian.org/debian/pool/main"
DEBIAN_TRACKER = "https://tracker.debian.org/pkg"
UPSTREAM = "http://downloads.asterisk.org/pub/telephony/sounds/"  # the copyright file's Source:, sounds folder
LICENCE_URLS = {"CC-BY-SA-3.0": "https://creativecommons.org/licenses/by-sa/3.0/",
                "CC-BY-3.0": "https://creativecommons.org/licenses/by/3.0/"}
LISTED_REJECTS = ("tone", "tone-elsewhere", "silence", "empty")  # listed by name; "short" only counted (~100)


def pool_url(source: str, filename: str) -> str:
    """Where Debian's archive keeps a binary package: pool/main/<initial>/<source>/<file> (lib* by 4 letters)."""
    initial = source[:4] if source.startswith("lib") else source[:1]
    return f"{DEBIAN_POOL}/{initial}/{source}/{filename}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f}"


def speakers_table(summary: dict) -> str:
    header = ("; SPEAKER | GENDER | LANGUAGE | NAME | LICENCE | PACKAGE | VERSION | UTTERANCES | SECONDS | TRAIN "
              "| VALID | TEST\n")
    rows = "".join(
        f"{s['speaker']} | {s['gender']} | {s['language']} | {s['name']} | {s['licence']} | {s['package']} | "
        f"{s['version']} | {s['utterances']} | {s['seconds']:.1f} | "
        + " | ".join(str(s["splits"][split]["utterances"]) for split in ("train", "valid", "test")) + "\n"
        for s in summary["speakers"])
    return header + rows


def readme(summary: dict, rejected: Sequence[dict]) -> str:
    speakers = summary["speakers"]
    split = summary["split"]
    rules = summary["rules"]
    lines = [
        "# Real speech: three Asterisk voice-prompt packages",
        "",
        f"{summary['utterances']} utterances, {_hours(summary['seconds'])} h of read speech by {len(speakers)} "
        "professional voices (French (Canada), Italian, Russian), 16 kHz mono 16-bit FLAC in LibriSpeech's layout. "
        "They are the telephone prompts of the Asterisk PBX (voice-mail menus, digits, letters, the phonetic "
        "alphabet, ...), recorded in a studio and distributed as raw G.722 (64 kbit/s) in Debian. There are no "
        "transcripts: each utterance's prompt name (`vm-deleted`, `digits/5`) is in `utterances.jsonl`.",
        "",
        "| speaker | voice | language | gender | licence | utterances | hours | train / valid / test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in speakers:
        counts = " / ".join(str(s["splits"][k]["utterances"]) for k in ("train", "valid", "test"))
        lines.append(f"| {s['speaker']} | {s['name']} ({s['folder']}) | {s['language_name']} | {s['gender']} | "
                     f"{s['licence']} | {s['utterances']} | {_hours(s['seconds'])} | {counts} |")
    lines += ["", "## Sources", ""]
    for p in summary["packages"]:
        lines.append(f"- `{p['package']}` {p['version']}: {p['url']} (sha256 `{p['sha256']}`)")
    lines += [
        f"- Debian source package: {DEBIAN_TRACKER}/asterisk-core-sounds; upstream: {UPSTREAM}",
        "",
        "## Credits and licences",
        "",
        "The recordings are used as distributed, decoded from G.722 to 16-bit PCM (FLAC, lossless) and otherwise "
        "unchanged (no trimming, no gain); non-speech and very short prompts are left out. Each package's copyright "
        "file is in `licences/`.",
        "",
    ]
    for s in speakers:
        lines.append(f"- {s['speaker']}, {s['name']}: {s['credit']} Licence {s['licence']} "
                     f"({LICENCE_URLS.get(s['licence'], 'see licences/')}).")
    lines += ["", "## Layout", "",
              "    SPEAKER/1/SPEAKER-1-UTT.flac   one chapter per speaker; UTT numbers the package's prompts in "
              "sorted order (rejected ones too, so ids never depend on the screening rules)",
              "    utterances.jsonl               id, speaker, split, prompt, source path in the package, seconds, "
              "peak dBFS, tonal share",
              "    rejects.jsonl                  the same for every prompt left out, with its reason",
              "    speakers.json, SPEAKERS.txt    per speaker: name, language, gender, licence, package, counts",
              "    corpus.json                    everything above as data (written last: marks a finished corpus)",
              "", "## What was left out, and why", ""]
    by_reason = collections.Counter(r["reason"] for r in rejected)
    for reason, text in rules["reasons"].items():
        per_speaker = collections.Counter(r["speaker"] for r in rejected if r["reason"] == reason)
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(per_speaker.items())) or "none"
        lines.append(f"- **{reason}** ({text}): {by_reason.get(reason, 0)} ({detail})")
        names = [f"{r['speaker']} {r['prompt']}" for r in rejected if r["reason"] == reason]
        if names and reason in LISTED_REJECTS:
            lines.append(f"  - {', '.join(names)}")
    lines += [
        "",
        "Tones are found by measurement (jaxcodec/data/tone_detector.py): a frame is tonal when one spectral peak "
        "holds most of its energy and its frequency stays within a hertz of the next frame's, which a synthetic "
        "tone does and a voice's pitch does not. A prompt that is a tone in one package is left out of all three "
        "(`tone-elsewhere`: the same system sound, e.g. as a chime of decaying notes with overtones, which is not "
        "a steady sinusoid).",
        "",
        "## Split",
        "",
        f"By utterance, from a hash of its id alone: sha256(id) as u in [0, 1); u < {split['test_fraction']} → "
        f"test, u < {split['test_fraction'] + split['valid_fraction']:g} → valid, else train (the manifest's "
        "`assign_split`). Every speaker has at least "
        f"{split['min_valid']} valid and {split['min_test']} test utterances (the build checks it). The valid and "
        "test utterances are unseen prompts of the training speakers, not unseen speakers. The same split, "
        "from the audio alone:",
        "",
        f"    jaxcodec manifest DIR -o manifest.jsonl --split-by utterance --valid-fraction {split['valid_fraction']} "
        f"--test-fraction {split['test_fraction']}",
        "",
        "or, in Python, `jaxcodec.data.real_corpus.manifest_entries(DIR)` (checked against utterances.jsonl).",
        "",
        "## How it was built",
        "",
        "    scripts/make_corpus.py --source asterisk --out DIR [--cache DEB_FOLDER]",
        "",
        "(jaxcodec.data.real_corpus): `apt-get download` of the three packages (or the .deb files already in the "
        "cache folder), read in memory, every `.g722` prompt decoded with the `G722` package (sippy's libg722, "
        "ITU-T G.722; 8000 bytes per second of 16 kHz audio), screened, split, written to a temporary folder that "
        f"is renamed into place. Silence rule: peak below {rules['silence_peak_dbfs']:g} dBFS; shortest kept: "
        f"{rules['min_seconds']:g} s; tone rule: at least {rules['tone_frame_share']:g} of the loud frames tonal.",
        "",
        "G.722 codes 0-4 kHz at 48 kbit/s and 4-8 kHz at 16 kbit/s: the upper band carries audible coding noise, "
        "which a codec trained here learns as part of the signal.",
        "",
    ]
    return "\n".join(lines)
