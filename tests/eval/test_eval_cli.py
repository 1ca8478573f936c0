"""`jaxcodec eval` end to end on an untrained micro codec and bundled clips (2 speakers, one unreadable file):
every section of metrics.json, the report and its PNGs, the one-line refusals, and --compare."""

import json
import shutil
from pathlib import Path

import jax
import pytest

from jaxcodec import audio
from jaxcodec import config as config_lib
from jaxcodec.commands import main
from tests.train.micro import micro_config

CORPUS = Path(__file__).resolve().parents[2] / "jaxcodec" / "data" / "corpus"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def micro_workdir(tmp_path_factory):
    from jaxcodec.train import sharding
    from jaxcodec.train import state as state_lib
    from jaxcodec.train.checkpoint import Checkpointer

    config = micro_config()
    _, state, _ = state_lib.create(config, sharding.make_mesh(config_lib.MeshConfig(), jax.devices()[:1]))
    workdir = tmp_path_factory.mktemp("eval") / "workdir"
    with Checkpointer(workdir / "checkpoints", async_save=False) as checkpointer:
        checkpointer.save(3, state, config=config_lib.to_dict(config))
    # What training copies from the shards: the report names the teachers that guided the run.
    (workdir / "teachers.json").write_text(json.dumps({"content": {"model": "pocketsphinx-en-us-phones", "dim": 40,
                                                                   "teacher": "phones from PocketSphinx, not HuBERT"},
                                                        "speaker": {"model": "resemblyzer", "dim": 256}}))
    return workdir


def manifest_of(tmp_path: Path) -> Path:
    rows = []
    for speaker in ("101", "102"):
        for utt in ("0000", "0001"):
            path = CORPUS / speaker / "1" / f"{speaker}-1-{utt}.flac"
            text = dict(line.split(" ", 1) for line in (path.parent / f"{speaker}-1.trans.txt").read_text()
                        .splitlines())[path.stem]
            info = audio.info(path)
            rows.append({"id": path.stem, "path": str(path), "duration": info.frames / info.sample_rate,
                         "frames": info.frames, "sample_rate": info.sample_rate, "channels": 1,
                         "speaker": speaker, "chapter": "1", "text": text, "split": "test"})
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"not audio at all")
    rows.append({**rows[0], "id": "broken", "path": str(bad)})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_eval_writes_every_section_and_the_report(micro_workdir, tmp_path, capsys):
    pytest.importorskip("pyworld", reason="the eval extra is not installed")
    out = tmp_path / "report"
    labels = tmp_path / "labels.json"
    # Per speaker (gender: here one value per speaker, so the speaker probe again, dropped) and per utterance.
    labels.write_text(json.dumps([{"speaker": 101, "gender": "M"}, {"speaker": 102, "gender": "F"},
                                  *[{"id": f"{s}-1-000{u}", "style": "ab"[u]} for s in (101, 102) for u in (0, 1)]]))
    assert main(["eval", "--checkpoint", str(micro_workdir), "--manifest", str(manifest_of(tmp_path)), "-o",
                 str(out), "--n-q", "1..2", "--labels", str(labels), "--samples", "1", "--workers", "2"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    result = json.loads((out / "metrics.json").read_text())
    assert result["step"] == 3 and result["utterances"] == 4
    assert list(result["bad_files"]) == ["broken"]  # skipped with its reason, the run went on
    assert [row["n_q"] for row in result["bitrates"]] == [1, 2]
    assert [row["tokens_per_second"] for row in result["bitrates"]] == [50.0, 100.0]
    for row in result["bitrates"]:
        for key in ("pesq", "stoi", "mel_distance", "si_sdr", "mcd", "wer", "per", "speaker_similarity", "eer"):
            assert row[key] is not None, key
    assert result["originals"]["eer"] == 0.0  # resemblyzer tells the two TTS voices apart
    assert 0.0 <= result["originals"]["wer"] < 0.7
    # PocketSphinx's phones against CMUdict's on these 4 flite clips: 35 edits / 102 phones (0.34), measured.
    assert 0.0 < result["originals"]["per"] < 0.6 and result["phone_reference"]["scorable_utterances"] == 4
    vc = result["voice_conversion"]
    assert vc["pairs"] == 4 and vc["similarity_to_target"] is not None and vc["per"] is not None
    assert result["codebook"]["tokens"] > 0 and len(result["codebook"]["used_codes_per_level"]) == 2
    probes = result["probes"]
    assert set(probes["utterance"]) == {"speaker", "style"}
    assert set(probes["utterance"]["speaker"]) == {"level 1", "levels 2-2", "levels 1-2"}
    assert probes["aligned_utterances"] == 4 and probes["phone"]["level 1"]["test"] > 0
    rows = [json.loads(line) for line in (out / "utterances.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"original", "reconstruction", "conversion"}
    report = (out / "report.md").read_text()
    assert "content teacher pocketsphinx-en-us-phones (phones from PocketSphinx, not HuBERT)" in report
    assert result["teachers"]["speaker"] == "resemblyzer (256-d, uncalibrated)"
    for name in ("bitrate_curves.png", "codebook_usage.png", "spectrograms.png"):
        assert (out / name).read_bytes()[:8] == PNG and f"({name})" in report
    assert "broken" in report and "Voice conversion" in report and "Probes" in report
    kept = sorted(p.name for p in (out / "samples").glob("*.wav"))
    assert kept == ["101-1-0000_nq1.wav", "101-1-0000_nq2.wav", "101-1-0000_original.wav", "101-1-0000_to_102.wav"]
    assert not list(out.glob(".speaker-audio-*"))  # the temporary WAVs are gone

    # --compare: two report folders side by side.
    other = tmp_path / "other"
    shutil.copytree(out, other)
    assert main(["eval", "--compare", str(out), str(other), "-o", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "| metric | report | other |" in table and "PESQ-wb" in table and "probe: speaker, level 1" in table
    assert (tmp_path / "cmp" / "compare_curves.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("argv, message", [
    (["--n-q", "0..2"], "every value must be in 1..2"),
    (["--n-q", "one"], "expected A..B or a comma list"),
    (["--split", "valid"], "no utterances in split 'valid'"),
    (["--labels", "/nonexistent/labels.json"], "not a readable JSON list"),
])
def test_eval_refuses_bad_requests_in_one_line(micro_workdir, tmp_path, capsys, argv, message):
    manifest = manifest_of(tmp_path)
    code = main(["eval", "--checkpoint", str(micro_workdir), "--manifest", str(manifest), "-o", str(tmp_path / "r"),
                 *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_eval_needs_its_inputs_or_compare(tmp_path, capsys):
    assert main(["eval", "-o", str(tmp_path)]) == 2
    assert "--checkpoint, --manifest required" in capsys.readouterr().err
    assert main(["eval", "--compare", str(tmp_path), str(tmp_path / "x")]) == 2
    assert "no metrics.json" in capsys.readouterr().err


class FakePhoneRecogniser:
    """Stands in for PocketSphinx in the scoring (inline: workers=1): hears the word "the" and the phones DH AH,
    with silence, noise and a split DH around them, in every clip."""

    def __init__(self):
        pass

    def transcribe(self, wav):
        return "the"

    def decode_phones(self, wav):
        return [("SIL", 0.0, 0.1), ("DH", 0.1, 0.15), ("+NSN+", 0.15, 0.2), ("DH", 0.2, 0.25), ("AH", 0.25, 0.4),
                ("SIL", 0.4, 0.5)]


def test_eval_scores_per_beside_wer_at_every_bitrate_the_originals_and_vc(micro_workdir, tmp_path, monkeypatch):
    pytest.importorskip("pyworld", reason="the eval extra is not installed")
    pytest.importorskip("pocketsphinx", reason="the eval extra is not installed (the dictionary)")
    from jaxcodec.eval import asr, evaluate, report

    for name in ("__init__", "transcribe", "decode_phones"):
        monkeypatch.setattr(asr.PocketSphinx, name, getattr(FakePhoneRecogniser, name))
    # The audio is the bundled clips'; the transcripts are chosen so that PER can be worked out by hand.
    rows = [json.loads(line) for line in manifest_of(tmp_path).read_text().splitlines()][:4]
    texts = {"101-1-0000": "The", "101-1-0001": "zzyzxq the", "102-1-0000": "a", "102-1-0001": "the a"}
    manifest = tmp_path / "texts.jsonl"
    manifest.write_text("".join(json.dumps({**row, "text": texts[row["id"]]}) + "\n" for row in rows))
    out = tmp_path / "per"
    result = evaluate.evaluate(evaluate.Options(
        checkpoint=micro_workdir, manifest=manifest, out=out, n_q="1..2", speaker_encoder=None, probes=False,
        samples=0, workers=1), log=lambda _: None)
    # CMUdict's first pronunciations: the → DH AH, a → AH; "the a" → DH AH AH → DH AH (runs merged); zzyzxq is not
    # in the dictionary. Heard: DH AH. Edits 0 (the), 1 (a: DH inserted), 0 (the a) over 2 + 1 + 2 phones.
    expected_per = 1 / 5
    # WER, for comparison: "the" against the, zzyzxq the, a, the a: 0 + 1 + 1 + 1 edits over 6 words.
    expected_wer = 3 / 6
    assert result["phone_reference"]["scorable_utterances"] == 3
    assert result["phone_reference"]["unscorable"] == {"a word not in the dictionary": 1}
    assert result["phone_reference"]["missing_words"] == ["zzyzxq"]
    assert result["originals"]["per"] == pytest.approx(expected_per)
    assert [row["per"] for row in result["bitrates"]] == pytest.approx([expected_per] * 2)
    assert [row["wer"] for row in result["bitrates"]] == pytest.approx([expected_wer] * 2)
    # Each utterance is the source of one conversion, scored against the source's transcript.
    assert result["voice_conversion"]["pairs"] == 4 and result["voice_conversion"]["per"] == pytest.approx(1 / 5)
    assert "per" not in result["skipped"]
    utterances = [json.loads(line) for line in (out / "utterances.jsonl").read_text().splitlines()]
    assert {u["decoded_phones"] for u in utterances} == {"DH AH"} and len(utterances) == 4 * (1 + 2 + 1)

    # The report and --compare show PER, and WER / PER of level 1 alone.
    report_md = report.render(out, result).read_text()
    lines = report_md.splitlines()
    assert next(line for line in lines if line.startswith("| tokens/s |")).endswith("| WER ↓ | PER ↓ |")
    for first in ("| 50 |", "| 100 |", "| original |"):  # level 1 only, both levels, the originals
        assert next(line for line in lines if line.startswith(first)).endswith("| 0.500 | 0.200 |")
    assert "PER scores 3 utterances; not scored: 1 (a word not in the dictionary); words not in the dictionary: " \
           "`zzyzxq`." in report_md
    assert "| PER against the source transcript's phones ↓ | 0.200 |" in report_md
    table = report.compare([out, out], names=["a", "b"])
    for line in ("| PER ↓ (full bitrate) | 0.200 | 0.200 |", "| PER ↓ (level 1 only) | 0.200 | 0.200 |",
                 "| WER ↓ (level 1 only) | 0.500 | 0.500 |", "| VC: PER against the source transcript's phones ↓ | "
                 "0.200 | 0.200 |"):
        assert line in table


def test_per_is_skipped_with_its_reason_without_pocketsphinx():
    from jaxcodec.eval import asr, evaluate

    skipped = {}
    assert evaluate._pronunciations(None, None, skipped) is None
    assert "--asr pocketsphinx" in skipped["per"] and "ASR: none" in skipped["per"]
    skipped = {}
    assert evaluate._pronunciations(asr.TransformersASR("some/model"), "some/model", skipped) is None
    assert "ASR: some/model" in skipped["per"]
