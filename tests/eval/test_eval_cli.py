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
    (workdir / "teachers.json").write_text(json.dumps({"hubert": {"model": "pocketsphinx-en-us-phones", "dim": 40,
                                                                   "teacher": "phones from PocketSphinx, not HuBERT"},
                                                        "ecapa": {"model": "resemblyzer", "dim": 256}}))
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
        for key in ("pesq", "stoi", "mel_distance", "si_sdr", "mcd", "wer", "speaker_similarity", "eer"):
            assert row[key] is not None, key
    assert result["originals"]["eer"] == 0.0  # resemblyzer tells the two TTS voices apart
    assert 0.0 <= result["originals"]["wer"] < 0.7
    vc = result["voice_conversion"]
    assert vc["pairs"] == 4 and vc["similarity_to_target"] is not None
    assert result["codebook"]["tokens"] > 0 and len(result["codebook"]["used_codes_per_level"]) == 2
    probes = result["probes"]
    assert set(probes["utterance"]) == {"speaker", "style"}
    assert set(probes["utterance"]["speaker"]) == {"level 1", "levels 2-2", "levels 1-2"}
    assert probes["aligned_utterances"] == 4 and probes["phone"]["level 1"]["test"] > 0
    rows = [json.loads(line) for line in (out / "utterances.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"original", "reconstruction", "conversion"}
    report = (out / "report.md").read_text()
    assert "content teacher pocketsphinx-en-us-phones (phones from PocketSphinx, not HuBERT)" in report
    assert result["teachers"]["acoustic"] == "resemblyzer (256-d)"
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
