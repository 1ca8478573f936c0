"""The real-speech corpus builder (jaxcodec/data/real_corpus.py) on fake Debian packages written here: `ar` archives
holding data.tar.xz with G.722 prompts that the G722 encoder made from synthetic signals (a vowel-like harmonic
signal with a moving pitch as "speech", pure tones, digital silence, a too-short clip, an empty file). No network:
apt-get is absent from PATH, or a stand-in script that copies the fake packages (or fails like apt does offline).
The real packages are never read; package names other than the three corpus ones are fictional ("xx")."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxcodec import output_lock
from jaxcodec.data import debian_package, manifest, real_corpus, tone_detector
from jaxcodec.data.real_corpus import CorpusError

G722 = pytest.importorskip("G722").G722

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "jaxcodec" / "data" / "corpus"
SR = 16_000
# ITU-T G.722's QMF analysis + synthesis filters delay the decoded signal by 22 samples (measured here, below).
G722_DELAY = 22
# G.722 at 64 kbit/s reproduces a band-limited harmonic signal at ~29-31 dB SNR (measured on these signals):
# 25 dB leaves room for the signal's randomness and fails on any rate, alignment or byte-order mix-up (< 0 dB).
MIN_ROUND_TRIP_SNR_DB = 25.0
SPEECH_PER_PACKAGE = 70  # enough kept utterances that the 8 % hash split gives every speaker >= 5 test utterances
FAKE_VERSION = "1.6.1-1"
FICTIONAL = "asterisk-core-sounds-xx-g722"  # no such package: stands for "any other Asterisk voice"
COPYRIGHT = textwrap.dedent("""\
    Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
    Upstream-Name: asterisk-core-sounds

    Files: *
    Copyright: 2003-2010, Allison Smith
    License: CC-BY-SA-3.0

    Files: fr-*
    Copyright: 2006-2008, June Wallack
    License: CC-BY-SA-3.0

    Files: ru-*
    Copyright: 2010, Maxim
    License: CC-BY-3.0

    Files: it-*
    Copyright: 2012 Carlo Flora
    License: CC-BY-3.0
    """)


# --------------------------------------------------------------------------------------------- signals, packages


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """A vowel-like signal: harmonics of a pitch that glides and wobbles (110-165 Hz), shaped by three formants,
    with a syllable-like loudness envelope and a little noise; peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 + 30 * t / seconds + 25 * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formants = ((rng.uniform(500, 800), 90), (rng.uniform(1000, 1500), 110), (2500, 170))
    wav = np.zeros_like(t)
    for k in range(1, 40):
        gain = sum(1 / (1 + ((k * f0 - centre) / width) ** 2) for centre, width in formants) + 0.02
        wav += np.where(k * f0 < 7500, gain, 0.0) * np.sin(k * phase) / np.sqrt(k)
    wav *= 0.3 + 0.7 * np.sin(np.pi * t / seconds) ** 2
    wav += 0.003 * rng.standard_normal(len(t))
    return 0.5 * wav / np.max(np.abs(wav))


def sine(frequency: float, seconds: float, amplitude: float = 0.25) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * SR)) / SR)


def g722_encode(wav: np.ndarray) -> bytes:
    return G722(SR, 64_000).encode((np.clip(wav, -1, 1) * 32_767).astype(np.int16))


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    error = decoded - reference
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum(error ** 2)))


SPEECH_BASES = [speech_like(0.6, seed) for seed in range(4)]
TONE = g722_encode(sine(1000, 0.6))


def speech_prompt(i: int) -> bytes:
    return g722_encode(np.roll(SPEECH_BASES[i % len(SPEECH_BASES)], 37 * i))


@functools.cache
def prompts_for(voice: real_corpus.Voice) -> dict[str, bytes]:
    """Speech prompts (two in a subfolder), a tone, silence/1, a short clip; fr and it have a 'beep' tone whose
    ru version is speech (so ru's is a tone only elsewhere); ru has an empty file."""
    prompts = {f"u{i:03d}": speech_prompt(i) for i in range(SPEECH_PER_PACKAGE)}
    prompts["digits/5"] = speech_prompt(100)
    prompts["digits/6"] = speech_prompt(101)
    prompts["tone"] = TONE
    prompts["silence/1"] = g722_encode(np.zeros(SR))
    prompts["short"] = g722_encode(speech_like(0.3, 9))
    prompts["beep"] = speech_prompt(102) if voice.speaker == 603 else g722_encode(sine(688, 0.45))
    if voice.speaker == 603:
        prompts["is"] = b""
    return prompts


def tar_xz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", preset=0) as archive:  # xz as Debian's, fastest preset
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}".encode() + b"`\n" + data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


def write_deb(path: Path, package: str, files: dict[str, bytes], version: str = FAKE_VERSION,
              extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> Path:
    control = f"Package: {package}\nSource: asterisk-core-sounds\nVersion: {version}\nArchitecture: all\n"
    data = [file_member(f"./{name}", payload) for name, payload in files.items()] + list(extra)
    path.write_bytes(ar_archive([("debian-binary", b"2.0\n"),
                                 ("control.tar.xz", tar_xz([file_member("./control", control.encode())])),
                                 ("data.tar.xz", tar_xz(data))]))
    return path


def voice_files(voice: real_corpus.Voice, prompts: dict[str, bytes], copyright_text: str = COPYRIGHT) -> dict:
    files = {f"usr/share/asterisk/sounds/{voice.folder}/{name}.g722": data for name, data in prompts.items()}
    files[f"usr/share/doc/{voice.package}/copyright"] = copyright_text.encode()
    return files


def deb_name(package: str) -> str:
    return f"{package}_{FAKE_VERSION}_all.deb"


def write_debs(folder: Path, prompts=prompts_for) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for voice in real_corpus.VOICES:
        write_deb(folder / deb_name(voice.package), voice.package, voice_files(voice, prompts(voice)))
    return folder


def fake_apt_get(bin_dir: Path, source: Path, log: Path, fail: str | None = None) -> Path:
    """An `apt-get` that 'downloads' from `source` (or fails with apt's offline message) and logs its arguments."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "apt-get"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import pathlib, shutil, sys
        with open({str(log)!r}, "a") as f:
            f.write(" ".join(sys.argv[1:]) + "\\n")
        if {fail!r}:
            sys.stderr.write({fail!r} + "\\n")
            sys.exit(100)
        for deb in pathlib.Path({str(source)!r}).glob(sys.argv[2] + "_*.deb"):
            shutil.copy(deb, deb.name)
            sys.exit(0)
        sys.stderr.write("E: Unable to locate package " + sys.argv[2] + "\\n")
        sys.exit(100)
        """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message, message
    return message


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The corpus built once from fake packages fetched by a stand-in apt-get (empty cache at the start)."""
    root = tmp_path_factory.mktemp("real")
    source = write_debs(root / "mirror")
    log = root / "apt.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(fake_apt_get(root / "bin", source, log)))
        summary = real_corpus.build(root / "out", cache=root / "cache", log=lambda line: None)
    return {"root": root, "out": root / "out", "cache": root / "cache", "summary": summary, "log": log,
            "source": source}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------- decoding, detection


def test_g722_round_trip_against_the_original_signal():
    original = speech_like(1.0, seed=7)
    data = g722_encode(original)
    assert len(data) == SR // 2  # 64 kbit/s: 8000 bytes per second of 16 kHz audio
    decoded = real_corpus.decode_g722(data)
    assert decoded.dtype == np.int16 and len(decoded) == len(original)
    decoded = decoded / 32_768
    lags = range(64)
    best = max(lags, key=lambda k: float(np.dot(original[:len(original) - k], decoded[k:])))
    assert best == G722_DELAY
    aligned = decoded[G722_DELAY:]
    reference = original[:len(original) - G722_DELAY]
    assert snr_db(reference, aligned) > MIN_ROUND_TRIP_SNR_DB
    assert abs(np.mean(aligned)) < 1e-3  # no DC offset added
    assert abs(20 * np.log10(np.std(aligned) / np.std(reference))) < 0.5  # level kept


def test_tone_detector_tells_tones_from_moving_pitch():
    decode = lambda wav: real_corpus.decode_g722(g722_encode(wav)) / 32_768
    for frequency in (300, 1000, 3000):
        assert tone_detector.is_tone(decode(sine(frequency, 0.6)), SR)
    two_tone = np.concatenate([sine(440, 0.1, 0.3), sine(880, 0.1, 0.3)])
    assert tone_detector.is_tone(decode(two_tone), SR)
    for seed in range(4):
        assert tone_detector.tonal_share(decode(speech_like(0.8, seed)), SR) < tone_detector.TONE_FRAME_SHARE / 2
    assert tone_detector.tonal_share(np.zeros(SR), SR) == 0.0
    # A nasal-like hum: nearly all energy in one harmonic (the second 25 dB down), so only the pitch's movement
    # tells it from a tone. Gliding 220 → 270 Hz over 0.6 s (~2.7 Hz per 32 ms hop, as a voice drifts) it is not
    # one; held at 245 Hz it is.
    t = np.arange(int(0.6 * SR)) / SR
    for start, end, tone in ((220, 270, False), (245, 245, True)):
        phase = 2 * np.pi * (start * t + (end - start) * t ** 2 / (2 * t[-1]))
        hum = 0.3 * np.sin(phase) + 0.3 * 10 ** (-25 / 20) * np.sin(2 * phase)
        assert tone_detector.is_tone(decode(hum), SR) is tone, (start, end)
    # A vowel held at a constant pitch (a sung note): steady, but its energy is spread over harmonics: not a tone.
    held = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 30))
    assert not tone_detector.is_tone(decode(0.3 * held / np.max(np.abs(held))), SR)


# ------------------------------------------------------------------------------------------------ the built corpus


def test_fetches_exactly_the_three_packages_through_apt_get(built):
    assert built["log"].read_text().splitlines() == [f"download {p}" for p in real_corpus.PACKAGES]
    assert sorted(p.name for p in built["cache"].iterdir()) == sorted(deb_name(p) for p in real_corpus.PACKAGES)
    packages = {p["package"]: p for p in built["summary"]["packages"]}
    for name in real_corpus.PACKAGES:
        deb = built["cache"] / deb_name(name)
        assert packages[name]["version"] == FAKE_VERSION
        assert packages[name]["sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()
        assert packages[name]["url"].endswith(f"/pool/main/a/asterisk-core-sounds/{deb.name}")


def test_layout_and_audio_are_the_decoded_prompts(built):
    out = built["out"]
    rows = {row["id"]: row for row in read_jsonl(out / real_corpus.UTTERANCES_FILE)}
    flacs = sorted(out.rglob("*.flac"))
    assert sorted(p.stem for p in flacs) == sorted(rows)
    for path in flacs:
        speaker, chapter = path.parent.parent.name, path.parent.name
        assert path.relative_to(out).as_posix() == f"{speaker}/{chapter}/{speaker}-{chapter}-{path.stem[-4:]}.flac"
        assert rows[path.stem]["speaker"] == int(speaker) and chapter == "1"
    # Prompt names are kept, subfolders included; the audio is the decoder's output, sample for sample.
    fr = real_corpus.VOICES[0]
    prompts = prompts_for(fr)
    by_prompt = {row["prompt"]: row for row in rows.values() if row["speaker"] == fr.speaker}
    for name in ("u000", "u017", "digits/5"):
        row = by_prompt[name]
        assert row["source"] == f"usr/share/asterisk/sounds/{fr.folder}/{name}.g722"
        audio, rate = sf.read(out / "601" / "1" / f"{row['id']}.flac", dtype="int16")
        info = sf.info(out / "601" / "1" / f"{row['id']}.flac")
        assert (rate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        np.testing.assert_array_equal(audio, real_corpus.decode_g722(prompts[name]))
    # Ids number the package's prompts in sorted order, rejected ones included (beep is rejected, and counted).
    assert sorted(prompts).index("beep") < sorted(prompts).index("digits/5")
    assert int(by_prompt["digits/5"]["id"].split("-")[2]) == sorted(prompts).index("digits/5")


def test_rejects_and_their_reasons(built):
    rejects = {(row["speaker"], row["prompt"]): row for row in read_jsonl(built["out"] / real_corpus.REJECTS_FILE)}
    reasons = {key: row["reason"] for key, row in rejects.items()}
    expected = {}
    for speaker in (601, 602, 603):
        expected |= {(speaker, "tone"): "tone", (speaker, "silence/1"): "silence", (speaker, "short"): "short"}
    expected |= {(601, "beep"): "tone", (602, "beep"): "tone", (603, "beep"): "tone-elsewhere", (603, "is"): "empty"}
    assert reasons == expected
    assert rejects[(603, "beep")]["detail"].startswith("a tone in fr_CA_f_June, it_IT_m_Carlo")
    assert rejects[(601, "short")]["seconds"] < real_corpus.MIN_SECONDS
    assert rejects[(601, "silence/1")]["peak_dbfs"] < real_corpus.SILENCE_PEAK_DBFS
    summary = built["summary"]
    assert summary["rejects"] == {"empty": 1, "short": 3, "silence": 3, "tone": 5, "tone-elsewhere": 1}
    assert summary["utterances"] == 3 * (SPEECH_PER_PACKAGE + 2)


def expected_split(utterance_id: str) -> str:
    """The documented rule, computed here: the first 64 bits of sha256(id) over 2**64; < 0.08 test, < 0.16 valid."""
    u = int.from_bytes(hashlib.sha256(utterance_id.encode()).digest()[:8], "big") / 2 ** 64
    return "test" if u < 0.08 else "valid" if u < 0.16 else "train"


def test_split_is_the_documented_hash_and_covers_every_speaker(built):
    entries = real_corpus.manifest_entries(built["out"])
    assert len(entries) == built["summary"]["utterances"]
    assert all(entry["split"] == expected_split(entry["id"]) for entry in entries)
    for speaker in ("601", "602", "603"):
        splits = [e["split"] for e in entries if e["speaker"] == speaker]
        assert splits.count("valid") >= 1 and splits.count("test") >= 5, (speaker, splits.count("test"))
    # The plain manifest command reproduces it from the audio alone.
    plain, _ = manifest.scan(built["out"], split_by="utterance", valid_fraction=0.08, test_fraction=0.08)
    assert [(e["id"], e["split"]) for e in plain] == [(e["id"], e["split"]) for e in entries]


def test_a_second_build_elsewhere_is_identical(built, tmp_path):
    real_corpus.build(tmp_path / "again", cache=built["cache"], log=lambda line: None)
    for name in (real_corpus.UTTERANCES_FILE, real_corpus.REJECTS_FILE, "README.md", "speakers.json",
                 "SPEAKERS.txt"):
        assert (tmp_path / "again" / name).read_text() == (built["out"] / name).read_text(), name


def test_combines_with_the_bundled_corpus_into_one_manifest(built):
    bundled, _ = manifest.scan(BUNDLED, valid_fraction=0, test_fraction=0, valid_speakers=("401", "402"),
                               test_speakers=("501", "502", "503"))
    real = real_corpus.manifest_entries(built["out"])
    combined = manifest.combine(bundled, real)
    assert len(combined) == len(bundled) + len(real)
    assert len({e["id"] for e in combined}) == len(combined)
    assert {e["speaker"] for e in combined} >= {"101", "503", "601", "602", "603"}
    with pytest.raises(manifest.ManifestError, match="in two corpora"):
        manifest.combine(real, real[:1])


def test_readme_and_speakers_json(built):
    out = built["out"]
    readme = (out / "README.md").read_text()
    for voice in real_corpus.VOICES:
        assert voice.package in readme and voice.name in readme and voice.licence in readme
    for text in ("https://creativecommons.org/licenses/by-sa/3.0/", "https://creativecommons.org/licenses/by/3.0/",
                 FAKE_VERSION, "June Wallack", "Carlo Flora", "Maxim Topal", "tone-elsewhere", "603 beep",
                 "--split-by utterance --valid-fraction 0.08 --test-fraction 0.08", "--source asterisk"):
        assert text in readme, text
    for package in built["summary"]["packages"]:
        assert package["sha256"] in readme and package["url"] in readme
    speakers = json.loads((out / "speakers.json").read_text())
    rows = read_jsonl(out / real_corpus.UTTERANCES_FILE)
    assert [s["speaker"] for s in speakers] == [601, 602, 603]
    for s, voice in zip(speakers, real_corpus.VOICES, strict=True):
        assert (s["name"], s["language"], s["gender"], s["licence"], s["package"]) == (
            voice.name, voice.language, voice.gender, voice.licence, voice.package)
        mine = [r for r in rows if r["speaker"] == s["speaker"]]
        for split in manifest.SPLITS:
            assert s["splits"][split]["utterances"] == sum(r["split"] == split for r in mine)
        assert s["seconds"] == pytest.approx(sum(r["seconds"] for r in mine), abs=0.01)
    table = (out / "SPEAKERS.txt").read_text().splitlines()
    assert table[0].startswith("; SPEAKER") and [line.split(" | ")[0] for line in table[1:]] == ["601", "602", "603"]
    assert (out / "licences" / f"{real_corpus.VOICES[0].package}.copyright").read_text() == COPYRIGHT


def test_rerun_on_a_finished_corpus_does_nothing(built, monkeypatch):
    monkeypatch.setenv("PATH", str(built["root"] / "nothing-here"))  # no apt-get: nothing may be fetched
    before = {p: p.stat().st_mtime_ns for p in built["out"].rglob("*")}
    summary = real_corpus.build(built["out"], cache=built["root"] / "empty-cache", log=lambda line: None)
    assert summary["built"] is False and summary["utterances"] == built["summary"]["utterances"]
    assert {p: p.stat().st_mtime_ns for p in built["out"].rglob("*")} == before
    assert not (built["root"] / "empty-cache").exists()


def test_manifest_entries_refuses_an_unfinished_or_changed_corpus(built, tmp_path):
    with pytest.raises(CorpusError, match="not a finished real corpus") as err:
        real_corpus.manifest_entries(tmp_path)
    one_line(err)
    copy = tmp_path / "copy"
    real_corpus.build(copy, cache=built["cache"], log=lambda line: None)
    next(copy.rglob("*.flac")).unlink()
    with pytest.raises(CorpusError, match="1 missing") as err:
        real_corpus.manifest_entries(copy)
    one_line(err)
    (copy / real_corpus.UTTERANCES_FILE).write_text("{not json\n")
    with pytest.raises(CorpusError, match="missing or damaged") as err:
        real_corpus.manifest_entries(copy)
    one_line(err)


# ---------------------------------------------------------------------------------------------------- failures


def test_missing_apt_get_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(CorpusError, match="apt-get not found") as err:
        real_corpus.build(tmp_path / "out", cache=tmp_path / "cache")
    assert "copy asterisk-core-sounds-fr-g722_*.deb" in one_line(err)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary, no lock left


def test_failed_download_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    offline = "E: Failed to fetch http://deb.debian.org/debian/pool/main/a/x.deb  Temporary failure resolving"
    monkeypatch.setenv("PATH", str(fake_apt_get(tmp_path / "bin", tmp_path, tmp_path / "log", fail=offline)))
    with pytest.raises(CorpusError, match="Temporary failure resolving") as err:
        real_corpus.build(tmp_path / "out", cache=tmp_path / "cache")
    assert one_line(err).startswith("apt-get download asterisk-core-sounds-fr-g722 failed")
    assert list((tmp_path / "cache").iterdir()) == [] and not (tmp_path / "out").exists()


def test_only_the_three_packages_are_ever_fetched(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("PATH", str(fake_apt_get(tmp_path / "bin", tmp_path, log)))
    with pytest.raises(CorpusError, match="reserved for evaluation") as err:
        real_corpus.fetch_package(FICTIONAL, tmp_path / "cache")
    one_line(err)
    assert not log.exists()  # refused before apt-get ran
    # A package of another voice lying in the cache is never opened (garbage: reading it would fail the build).
    cache = write_debs(tmp_path / "cache")
    (cache / f"{FICTIONAL}_1.0_all.deb").write_bytes(b"not a package")
    summary = real_corpus.build(tmp_path / "out", cache=cache, log=lambda line: None)
    assert [p["package"] for p in summary["packages"]] == list(real_corpus.PACKAGES)


def test_corrupt_archive_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    cache = write_debs(tmp_path / "cache")
    deb = cache / deb_name(real_corpus.PACKAGES[1])
    deb.write_bytes(deb.read_bytes()[: deb.stat().st_size // 2])
    with pytest.raises(CorpusError, match="truncated") as err:
        real_corpus.build(tmp_path / "out", cache=cache)
    assert f"delete {deb} and run again" in one_line(err)
    deb.write_bytes(b"<html>404</html>")
    with pytest.raises(CorpusError, match="not an ar archive"):
        real_corpus.build(tmp_path / "out", cache=cache)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("member", ["./usr/share/asterisk/sounds/fr_CA_f_June/../../../../../etc/x.g722",
                                    "/usr/share/asterisk/sounds/fr_CA_f_June/x.g722", "symlink", "hardlink"])
def test_path_traversal_in_the_archive_is_refused(tmp_path, member):
    voice = real_corpus.VOICES[0]
    if member == "symlink":
        info = tarfile.TarInfo(f"./usr/share/asterisk/sounds/{voice.folder}/evil.g722")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../../../../etc/passwd"
        extra = [(info, None)]
    elif member == "hardlink":
        info = tarfile.TarInfo(f"./usr/share/asterisk/sounds/{voice.folder}/evil.g722")
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        extra = [(info, None)]
    else:
        extra = [file_member(member, b"\x00" * 100)]
    cache = tmp_path / "cache"
    write_debs(cache)
    write_deb(cache / deb_name(voice.package), voice.package, voice_files(voice, prompts_for(voice)), extra=extra)
    with pytest.raises(CorpusError, match="unsafe (path|link) in archive") as err:
        real_corpus.build(tmp_path / "out", cache=cache)
    one_line(err)
    assert not (tmp_path / "out").exists()
    with pytest.raises(debian_package.PackageError, match="unsafe"):
        debian_package.read_deb(cache / deb_name(voice.package), lambda path: True)


def test_a_licence_other_than_the_recorded_one_is_refused(tmp_path):
    cache = write_debs(tmp_path / "cache")
    voice = real_corpus.VOICES[2]
    changed = COPYRIGHT.replace("Files: ru-*\nCopyright: 2010, Maxim\nLicense: CC-BY-3.0",
                                "Files: ru-*\nCopyright: 2010, Maxim\nLicense: proprietary")
    write_deb(cache / deb_name(voice.package), voice.package, voice_files(voice, prompts_for(voice), changed))
    with pytest.raises(CorpusError, match="licence 'proprietary', not CC-BY-3.0") as err:
        real_corpus.build(tmp_path / "out", cache=cache)
    one_line(err)


def test_too_few_prompts_to_split_is_refused(tmp_path):
    few = lambda voice: {f"u{i}": speech_prompt(i) for i in range(3)}
    cache = write_debs(tmp_path / "cache", prompts=few)
    with pytest.raises(CorpusError, match="too few usable prompts") as err:
        real_corpus.build(tmp_path / "out", cache=cache)
    one_line(err)
    assert not (tmp_path / "out").exists()


def test_a_failed_write_leaves_no_output_and_the_next_run_completes(built, tmp_path, monkeypatch):
    written = []

    def full_disk(path, pcm):
        if len(written) == 5:
            raise OSError(28, "No space left on device")
        written.append(path)
        real_write(path, pcm)

    real_write = real_corpus._write_flac
    monkeypatch.setattr(real_corpus, "_write_flac", full_disk)
    with pytest.raises(CorpusError, match="No space left on device") as err:
        real_corpus.build(tmp_path / "out", cache=built["cache"], log=lambda line: None)
    one_line(err)
    assert os.listdir(tmp_path) == []  # neither the corpus, nor its temporary folder, nor the lock
    monkeypatch.setattr(real_corpus, "_write_flac", real_write)
    stale = tmp_path / ".out.tmp-0123456789abcdef"  # what a killed build leaves
    (stale / "601" / "1").mkdir(parents=True)
    assert real_corpus.build(tmp_path / "out", cache=built["cache"], log=lambda line: None)["built"] is True
    assert os.listdir(tmp_path) == ["out"]


def test_an_output_folder_holding_something_else_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="is not a finished corpus") as err:
        real_corpus.build(tmp_path / "out", cache=tmp_path / "cache")
    one_line(err)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_command_line_error_is_one_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "no-bin")}
    done = subprocess.run([sys.executable, "-m", "scripts.make_corpus", "--source", "asterisk", "--out",
                           str(tmp_path / "out"), "--cache", str(tmp_path / "cache")], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("make_corpus: error: apt-get not found")


def test_a_second_build_of_the_same_folder_while_one_runs_is_refused(built, tmp_path):
    with output_lock.held(tmp_path, name=".out.lock", command="make_corpus.py --source asterisk"):
        with pytest.raises(CorpusError, match="make_corpus.py --source asterisk") as err:
            real_corpus.build(tmp_path / "out", cache=built["cache"], log=lambda line: None)
    one_line(err)
    assert not (tmp_path / "out").exists()
