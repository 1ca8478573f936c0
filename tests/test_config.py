"""Config: the shipped YAML files, overrides, and errors that name the offending key."""

import dataclasses
import subprocess
import sys
import time
import types
import typing

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
                                      "model.causal=true", "data.content_layer=avg", "disc.kinds=[msstft, mpd]"])
    assert c.rvq.n_q == 4 and c.mesh.shape == (2, 4) and c.optim.learning_rate == 3e-4
    assert c.model.causal is True and c.data.content_layer == "avg" and c.disc.kinds == ("msstft", "mpd")
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


def test_every_numeric_field_has_a_range():
    """validate checks every int and float field (and tuples of them) of every section: a field added without a
    range, or a range naming no field, fails here."""
    numeric = set()
    for section in dataclasses.fields(cfg.Config):
        hints = typing.get_type_hints(section.type if isinstance(section.type, type) else type(section.default))
        for name, hint in hints.items():
            item = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
            if typing.get_origin(item) in (typing.Union, types.UnionType):  # `float | None`: an optional number
                item = next(arg for arg in typing.get_args(item) if arg is not type(None))
            if item in (int, float):
                numeric.add(f"{section.name}.{name}")
    checked_strings = {"train.stop_signals"}  # signal names, checked against the system's
    assert numeric == set(cfg.RANGES) - checked_strings


# Issue 18 #2 and #3: values that used to crash a run after compiling (or pass silently), all in one error.
OUT_OF_RANGE = {"train.checkpoint_every": 0, "train.keep_checkpoints": 0, "train.num_steps": -5, "rvq.n_q": 0,
                "rvq.codebook_size": 0, "optim.learning_rate": ".nan", "optim.b1": 1.0, "loss.lambda_mel": -1.0,
                "model.ratios": [8, 0], "mesh.shape": [-2, 1]}


def test_out_of_range_values_are_all_reported_one_line_each():
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load("configs/tiny.yaml", [f"{key}={value}" for key, value in OUT_OF_RANGE.items()])
    first, *lines = str(err.value).splitlines()
    assert first == f"{len(OUT_OF_RANGE)} config values out of range:"
    named = {"model.ratios": "model.ratios[1]", "mesh.shape": "mesh.shape[0]"}  # tuples name the bad entry
    assert {line.split(" = ")[0].strip() for line in lines} == {named.get(k, k) for k in OUT_OF_RANGE}
    assert "  optim.learning_rate = nan: must be a finite number > 0" in lines
    assert "  train.checkpoint_every = 0: must be an integer ≥ 1" in lines
    assert cfg.validate(cfg.load("configs/tiny.yaml")) == cfg.load("configs/tiny.yaml")


def test_train_refuses_an_out_of_range_config_before_anything_else(tmp_path):
    """The check runs at load: `jaxcodec train` stops in seconds (before the shards are opened or anything
    compiles), with the CLI's config error and one line per bad value."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "jaxcodec", "train", "--data", str(tmp_path / "no-shards"),
                           "--workdir", str(tmp_path / "run"), "--set", "train.checkpoint_every=0",
                           "--set", "optim.learning_rate=.nan"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines() == ["jaxcodec: config error: 2 config values out of range:",
                                        "  optim.learning_rate = nan: must be a finite number > 0",
                                        "  train.checkpoint_every = 0: must be an integer ≥ 1"]
    assert not (tmp_path / "run").exists()
    print(f"refused in {time.monotonic() - started:.1f} s")
