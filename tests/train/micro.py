"""The micro training config shared by the training tests: every part of the GAN step, small enough to compile
in ~30-60 s on 2 CPU cores."""

import json

from jaxcodec import config as config_lib

CONTENT_DIM, SPEAKER_DIM = 8, 4
MICRO = {
    "model": {"n_filters": 4, "dimension": 16, "lstm_layers": 1, "aligner_dim": 16, "aligner_heads": 2,
              "semantic_dim": CONTENT_DIM, "acoustic_dim": SPEAKER_DIM},
    "rvq": {"n_q": 2, "codebook_size": 16, "kmeans_iters": 10, "decay": 0.9},
    "disc": {"kinds": ["msstft"], "msstft_filters": 4, "msstft_n_ffts": [128]},
    "loss": {"mel_form": "speechtokenizer"},
    "optim": {"learning_rate": 1e-3, "warmup_steps": 2},
    "data": {"segment_seconds": 0.32, "content_layer": "9"},
    # 6 generator-only steps, then 6 GAN steps: the SIGKILL-resume test kills the run during the first and its
    # resume crosses into the second.
    "train": {"batch_size": 8, "num_steps": 12, "checkpoint_every": 1, "keep_checkpoints": 12, "eval_every": 6,
              "log_every": 1, "disc_warmup_steps": 6},
}


def micro_config(**sections) -> config_lib.Config:
    mapping = json.loads(json.dumps(MICRO))
    for section, values in sections.items():
        mapping.setdefault(section, {}).update(values)
    return config_lib.from_dict(mapping)

# The quantizer's data-driven discrete decisions switched off, for comparisons across meshes, processes and dtypes
# (see test_sharded_step_equals_one_device_step); the codebooks still update by EMA from global statistics.
PINNED = {"kmeans_init": False, "dead_code_threshold": 0.0}
