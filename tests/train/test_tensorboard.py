"""TensorBoard logging: metric rows → scalars, validation clips → audio and spectrogram images, resume purge.
Checked by reading the event files back with an independent TFRecord/protobuf reader (tb_events.py). The
spectrogram image itself is tested in tests/test_plots.py."""

import numpy as np

from jaxcodec.train import tensorboard
from jaxcodec.train.tensorboard import TensorBoard
from tests.train.tb_events import read_events, values_by_tag

SR = 16_000


def test_scalar_items_flattens_per_level_lists_and_skips_bookkeeping():
    row = {"step": 3, "elapsed": 1.0, "loss/total": 2.5, "codebook/perplexity_q": [3.0, 5.0], "skipped": 0}
    assert tensorboard.scalar_items(row) == [("loss/total", 2.5), ("codebook/perplexity/level_0", 3.0),
                                            ("codebook/perplexity/level_1", 5.0), ("skipped", 0.0)]


def test_writer_round_trip_and_resume_purge(tmp_path):
    board = TensorBoard(tmp_path, start_step=0)
    for step in range(4):
        board.scalars(step, {"step": step, "loss/total": 10.0 - step, "codebook/used_codes_q": [step, 2 * step]})
    wav = 0.25 * np.sin(2 * np.pi * 440 * np.arange(SR // 4) / SR)
    board.clip(4, "valid/clip_0", wav, 0.5 * wav, SR)
    board.close()
    found = values_by_tag(tmp_path)
    assert found["loss/total"] == [(s, 10.0 - s) for s in range(4)]
    assert found["codebook/used_codes/level_1"] == [(s, 2.0 * s) for s in range(4)]
    (step, original), = found["valid/clip_0/original"]
    assert step == 4 and original.shape == wav.shape
    np.testing.assert_allclose(original, wav, atol=1 / 32768)  # stored as 16-bit WAV
    np.testing.assert_allclose(found["valid/clip_0/reconstruction"][0][1], 0.5 * wav, atol=1 / 32768)
    assert found["valid/clip_0/spectrogram"][0][1].ndim == 3

    # A resumed run (from step 2) opens a writer that tells TensorBoard to drop the old points from step 2 on.
    TensorBoard(tmp_path, start_step=2).close()
    purges = [e for e in read_events(tmp_path) if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in purges] == [(2, 1)]  # SessionLog.START


def test_disabled_writer_writes_nothing(tmp_path):
    board = TensorBoard(tmp_path / "tb", start_step=0, enabled=False)
    board.scalars(0, {"loss/total": 1.0})
    board.clip(0, "x", np.zeros(100), np.zeros(100), SR)
    board.close()
    assert not (tmp_path / "tb").exists()


