"""The three Debian Asterisk voice packages of the real-speech corpus (real_corpus.py): who speaks in each, under
which licence, how a package is fetched (apt-get download, or the .deb already in a cache folder) and read (its
prompts, version and copyright file, with the licence checked again), and how a G.722 prompt decodes. Exactly these
three packages: any other name is refused before apt-get runs, since the other Asterisk voices are reserved for an
independent evaluation. numpy (+ the `G722` decoder, extra `corpus`); no jax, no torch.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from jaxcodec import audio
from jaxcodec.data import debian_package

SAMPLE_RATE = audio.SAMPLE_RATE  # 16 kHz: G.722's rate, and the codec's
G722_BITRATE = 64_000  # Asterisk's .g722 files are raw G.722 mode 1 (64 kbit/s), no header
SAMPLES_PER_BYTE = 2  # 64 kbit/s = 8000 bytes/s for 16 000 samples/s: a decoder disagreeing is a rate mix-up
SOUNDS_ROOT = "usr/share/asterisk/sounds"
PROMPT_SUFFIX = ".g722"
CACHE_ENV = "JAXCODEC_DEB_CACHE"


class CorpusError(RuntimeError):
    """The real corpus cannot be fetched, read or written; the message is one line saying what to do (raised here
    and by real_corpus.py, which re-exports it)."""


@dataclasses.dataclass(frozen=True)
class Voice:
    speaker: int  # LibriSpeech-style id; the bundled synthetic corpus uses 101-503
    package: str  # Debian binary package
    folder: str  # the voice's folder under usr/share/asterisk/sounds/
    name: str  # who the copyright file credits
    language: str  # BCP 47
    language_name: str
    gender: str  # F | M: the voice as the folder name states it (fr_CA_f_..., it_IT_m_..., ru_RU_f_...)
    licence: str  # SPDX id, as the package's copyright file states it for `copyright_files`
    copyright_files: str  # the copyright file's `Files:` pattern that covers this voice
    credit: str  # the CREDITS text the copyright file quotes, condensed


# Checked against usr/share/doc/PACKAGE/copyright of version 1.6.1-1 (one file shared by the three packages);
# read_package() checks the licence again in whatever version it is given.
VOICES = (
    Voice(601, "asterisk-core-sounds-fr-g722", "fr_CA_f_June", "June Wallack", "fr-CA", "French (Canada)", "F",
          "CC-BY-SA-3.0", "fr-*",
          "Copyright 2006-2008 June Wallack. Recorded by June Wallack (http://www.junewallack.com); translated into "
          "French by Clod Patry, Kristopher Lalletti and June Wallack; financial contributions by Digium, Inc., "
          "Unlimitel and BGM Informatique."),
    Voice(602, "asterisk-core-sounds-it-g722", "it_IT_m_Carlo", "Carlo Flora", "it-IT", "Italian", "M",
          "CC-BY-3.0", "it-*",
          "Copyright 2012 Carlo Flora (http://www.segreterietelefoniche.it). Recorded by Carlo Flora "
          "(http://www.carloflora.com); translated by Silvia Petrin from the English text distributed by Digium."),
    Voice(603, "asterisk-core-sounds-ru-g722", "ru_RU_f_IvrvoiceRU", "Maxim Topal / ivrvoice.ru", "ru-RU", "Russian",
          "F", "CC-BY-3.0", "ru-*",
          "Copyright 2010 Maxim. Provided by Maxim Topal (http://www.ivrvoice.ru); the voice is a woman's, "
          "not named."),
)
PACKAGES = tuple(voice.package for voice in VOICES)


@dataclasses.dataclass
class Package:
    voice: Voice
    path: Path  # the .deb
    version: str
    sha256: str
    source: str  # Debian source package (for the archive URL)
    copyright: str  # usr/share/doc/PACKAGE/copyright
    prompts: dict[str, bytes]  # prompt name ("digits/5", "vm-deleted") → G.722 bytes, sorted by name


# --------------------------------------------------------------------------------------------------- fetching


def default_cache() -> Path:
    """$JAXCODEC_DEB_CACHE, else $XDG_CACHE_HOME/jaxcodec/debian (default ~/.cache/jaxcodec/debian)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxcodec" / "debian"


def check_package_name(name: str) -> Voice:
    for voice in VOICES:
        if voice.package == name:
            return voice
    raise CorpusError(f"{name!r} is not one of the corpus packages ({', '.join(PACKAGES)}); the other Asterisk "
                      "voices are reserved for evaluation and never fetched here")


def fetch_package(name: str, cache: str | os.PathLike) -> Path:
    """The .deb of one of the three packages: the one in `cache` (NAME_*.deb), else downloaded there by apt-get."""
    check_package_name(name)
    cache = Path(cache)
    found = sorted(cache.glob(f"{name}_*.deb"))
    if len(found) > 1:
        raise CorpusError(f"{len(found)} versions of {name} in {cache} ({', '.join(p.name for p in found)}): "
                          "keep one")
    if found:
        return found[0]
    try:
        return debian_package.apt_download(name, cache)
    except debian_package.PackageError as err:
        raise CorpusError(f"{err}; on a machine without apt or network, copy {name}_*.deb (Debian's archive, "
                          f"pool/main/a/asterisk-core-sounds/) into {cache}") from None


def _copyright_path(voice: Voice) -> str:
    return f"usr/share/doc/{voice.package}/copyright"


def check_licence(voice: Voice, copyright_text: str) -> None:
    """The copyright file must still grant voice.licence for voice.copyright_files (deb822 paragraphs)."""
    for paragraph in copyright_text.split("\n\n"):
        fields = debian_package.parse_control(paragraph)
        if voice.copyright_files in fields.get("Files", "").split():
            if fields.get("License", "").split("\n")[0].strip() == voice.licence:
                return
            raise CorpusError(f"{voice.package}'s copyright file gives {voice.copyright_files} the licence "
                              f"{fields.get('License')!r}, not {voice.licence}: check it before using the voice")
    raise CorpusError(f"{voice.package}'s copyright file has no 'Files: {voice.copyright_files}' paragraph: "
                      "check the voice's licence before using it")


def read_package(voice: Voice, path: Path) -> Package:
    """The prompts, version and copyright of one voice's .deb; a damaged or unexpected package → CorpusError."""
    prefix = f"{SOUNDS_ROOT}/{voice.folder}/"
    wanted = lambda p: (p.startswith(prefix) and p.endswith(PROMPT_SUFFIX)) or p == _copyright_path(voice)
    remedy = f"delete {path} and run again to download it afresh"
    try:
        contents = debian_package.read_deb(path, wanted)
    except debian_package.PackageError as err:
        raise CorpusError(f"{path.name}: {err}; {remedy}") from None
    if contents.control.get("Package") != voice.package:
        raise CorpusError(f"{path.name} holds package {contents.control.get('Package')!r}, not {voice.package}; "
                          f"{remedy}")
    copyright_bytes = contents.files.pop(_copyright_path(voice), None)
    if copyright_bytes is None:
        raise CorpusError(f"{path.name} has no {_copyright_path(voice)}: its licence cannot be checked; {remedy}")
    copyright_text = copyright_bytes.decode("utf-8", "replace")
    check_licence(voice, copyright_text)
    prompts = {p[len(prefix):-len(PROMPT_SUFFIX)]: data for p, data in sorted(contents.files.items())}
    if not prompts:
        raise CorpusError(f"{path.name} holds no {PROMPT_SUFFIX} prompts under {prefix}; {remedy}")
    return Package(voice, path, contents.control.get("Version", "?"), debian_package.sha256(path),
                   contents.control.get("Source", voice.package).split()[0], copyright_text, prompts)


# ----------------------------------------------------------------------------------------- decoding, screening


def decode_g722(data: bytes) -> np.ndarray:
    """Raw G.722 at 64 kbit/s → 16 kHz int16 samples (a fresh decoder state: each file is its own bitstream)."""
    try:
        from G722 import G722
    except ImportError:
        raise CorpusError("the G.722 decoder is not installed: pip install -e '.[corpus]' (or G722==1.2.8)") from None
    pcm = np.array(G722(SAMPLE_RATE, G722_BITRATE).decode(data), dtype=np.int16)
    if len(pcm) != SAMPLES_PER_BYTE * len(data):
        raise CorpusError(f"the G.722 decoder returned {len(pcm)} samples for {len(data)} bytes, not "
                          f"{SAMPLES_PER_BYTE} per byte: a different G722 package version? (pinned: 1.2.8)")
    return pcm
