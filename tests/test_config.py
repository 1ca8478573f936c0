"""Config: the shipped YAML files, overrides, and errors that name the offending key."""

import dataclasses

import pytest

from jaxcodec import config as cfg


def test_base_yaml_is_the_paper_model_and_equals_the_defaults():
    base = cfg.load("configs/base.yaml")
    assert base == cfg.Config()
    assert base.model.hop_length == 320 and base.model.frame_rate == 50
    assert (base.rvq.n_q, base.rvq.codebook_size) == (8, 1024)
    assert base.tokens_per_second == 400 and base.kbps == 4.0
    assert base.loss.lambda_semantic == base.loss.lambda_acoustic == 0.5


def test_speechtokenizer_and_tiny_yaml():
    st = cfg.load("configs/speechtokenizer.yaml")
    assert (st.model.n_filters, st.model.dimension, st.model.encoder_bidirectional) == (64, 1024, True)
    tiny = cfg.load("configs/tiny.yaml")
    assert tiny.model.frame_rate == 50 and tiny.model.semantic_dim == 768 and tiny.model.acoustic_dim == 192


def test_overrides_parse_yaml_values_and_keep_types():
    c = cfg.load("configs/tiny.yaml", ["rvq.n_q=4", "mesh.shape=[2, 4]", "optim.learning_rate=3e-4",
                                      "model.causal=true", "data.hubert_layer=avg", "disc.kinds=[msstft, mpd]"])
    assert c.rvq.n_q == 4 and c.mesh.shape == (2, 4) and c.optim.learning_rate == 3e-4
    assert c.model.causal is True and c.data.hubert_layer == "avg" and c.disc.kinds == ("msstft", "mpd")
    assert c.model.n_filters == 8  # the file's values survive
    hash(c)  # frozen and hashable: usable as a jit static argument


@pytest.mark.parametrize("override,message", [
    ("rvq.n_qq=4", "unknown config key 'rvq.n_qq'"),
    ("modle.dimension=4", "unknown config key 'modle'"),
    ("rvq.n_q=four", "rvq.n_q: expected an integer"),
    ("model.causal=3", "model.causal: expected true/false"),
    ("loss.adversarial=wgan", "loss.adversarial: 'wgan' is not one of"),
    ("model.ratios=5", "model.ratios: expected a list"),
    ("novalue", "must look like section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(cfg.ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        cfg.load("configs/tiny.yaml", [override])


def test_unknown_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: 4\n  epochs: 3\n")
    with pytest.raises(cfg.ConfigError, match="unknown config key 'train.epochs'"):
        cfg.load(path)
    with pytest.raises(cfg.ConfigError, match="config file not found"):
        cfg.load(tmp_path / "missing.yaml")


def test_round_trip_through_plain_data():
    c = cfg.load("configs/speechtokenizer.yaml")
    assert cfg.from_dict(cfg.to_dict(c)) == c
    assert dataclasses.asdict(c)["model"]["ratios"] == (8, 5, 4, 2)
