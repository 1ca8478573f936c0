"""`jaxcodec info`: sizes equal the PyTorch peers built with the same hyper-parameters."""

import json
import subprocess
import sys

import pytest

from jaxcodec import config as cfg
from jaxcodec.commands import main
from jaxcodec.commands.info import model_info
from scripts.torch_peers import peers as torch_peers


def speechtokenizer_class():
    """The PyTorch SpeechTokenizer class (see scripts/torch_peers/peers.py); skips the test when it is not installed."""
    try:
        return torch_peers.speechtokenizer_class()
    except ModuleNotFoundError:
        pytest.skip("speechtokenizer is not installed (make install adds it)")


def test_base_size_equals_transformers_encodec():
    from transformers import EncodecConfig, EncodecModel

    peer = EncodecModel(EncodecConfig(sampling_rate=16_000, upsampling_ratios=[8, 5, 4, 2], codebook_size=1024,
                                      target_bandwidths=[4.0], use_causal_conv=False))
    peer_params = sum(p.numel() for p in peer.parameters())  # codebooks are buffers: not counted
    info = model_info(cfg.load("configs/base.yaml"))
    assert info["params"]["encoder_decoder"] == peer_params  # 14,851,810
    # The generator adds the two teacher heads (~0.7 M) to EnCodec's encoder and decoder.
    assert abs(info["params"]["generator"] - peer_params) / peer_params < 0.06
    assert (info["frame_rate"], info["tokens_per_second"], info["kbps"]) == (50.0, 400.0, 4.0)


def test_speechtokenizer_size_equals_the_pytorch_speechtokenizer():
    peer = speechtokenizer_class()(dict(
        n_filters=64, strides=[8, 5, 4, 2], dimension=1024, semantic_dimension=768, bidirectional=True,
        dilation_base=2, residual_kernel_size=3, n_residual_layers=1, lstm_layers=2, activation="ELU",
        codebook_size=1024, n_q=8, sample_rate=16_000))  # spt_base_cfg.json
    peer_params = sum(p.numel() for p in peer.parameters())
    info = model_info(cfg.load("configs/speechtokenizer.yaml"))
    ours = info["params"]["encoder_decoder"] + info["params"]["semantic_head"]
    assert ours == peer_params  # 103,675,586
    assert info["params"]["encoder"] == sum(p.numel() for p in peer.encoder.parameters())


def test_info_json_command_line():
    out = subprocess.run([sys.executable, "-m", "jaxcodec", "info", "--config", "configs/tiny.yaml", "--json",
                          "--set", "rvq.n_q=4"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert {"params", "frame_rate", "n_q", "codebook_size", "tokens_per_second", "kbps"} <= set(info)
    assert {"generator", "total", "encoder", "decoder"} <= set(info["params"])
    assert info["n_q"] == 4 and info["tokens_per_second"] == 200.0
    assert info["params"]["total"] == info["params"]["generator"] + info["params"]["discriminators"]


def test_info_text_and_config_errors(capsys):
    assert main(["info", "--config", "configs/tiny.yaml"]) == 0
    assert "tokens/s" in capsys.readouterr().out
    assert main(["info", "--config", "configs/tiny.yaml", "--set", "rvq.bogus=1"]) == 2
    assert "unknown config key 'rvq.bogus'" in capsys.readouterr().err
