"""Scoring groups of clips in worker processes gives exactly the inline scores, which are the metrics' own."""

import numpy as np
import pytest

from jaxcodec import audio
from jaxcodec.eval import metrics, scoring
from tests.eval.test_metrics import speechlike

pytest.importorskip("pyworld", reason="the eval extra is not installed")


def test_pool_scores_equal_inline_scores_equal_the_metrics(tmp_path):
    rng = np.random.default_rng(0)
    jobs = []
    for group in range(2):
        original = speechlike(1.0 + 0.5 * group)
        degraded = original + 0.05 * rng.standard_normal(len(original))
        paths = [tmp_path / f"{group}_{name}.wav" for name in ("original", "degraded")]
        for path, wav in zip(paths, (original, degraded), strict=True):
            audio.write(path, wav, subtype="FLOAT")
        jobs.append({"original": str(paths[0]), "original_row": 2 * group, "sample_rate": 16_000,
                     "items": [{"row": 2 * group + 1, "path": str(paths[1]), "kind": "reconstruction"}]})
    inline = list(scoring.score_groups(jobs, workers=1, use_pocketsphinx=False))
    pooled = list(scoring.score_groups(jobs, workers=2, use_pocketsphinx=False))
    assert pooled == inline
    (row, scores), = inline[1][0]
    assert row == 3
    original, degraded = (audio.read(jobs[1][k] if k == "original" else jobs[1]["items"][0]["path"])[0]
                          for k in ("original", "item"))
    expected = metrics.reconstruction_scores(original, degraded, 16_000)
    assert {k: scores[k] for k in expected} == expected
    assert scores["mcd"] > 0 and scores["vuv_error"] is not None
