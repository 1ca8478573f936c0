"""Weight import from the PyTorch peers: transformers' EncodecModel and the speechtokenizer package's
SpeechTokenizer, built small with random weights (no downloads). After `import_peer` our encoder latents, codes,
decoded audio (and SpeechTokenizer's semantic transform) equal the peer's own forward on the same input; export
gives back the peer's exact state dict; the CLI round trip goes through files (safetensors folder, `.pt`)."""

from __future__ import annotations

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxcodec import config as config_lib
from jaxcodec.interop import convert, files
from jaxcodec.interop.layout import InteropError
from jaxcodec.models.codec import Codec
from scripts.torch_peers import peers as torch_peers

torch.set_num_threads(2)

# Small models of each peer's architecture: every SEANet layer kind, 2 LSTM layers (bidirectional for
# SpeechTokenizer), 8 RVQ levels.
SMALL = ["model.n_filters=4", "model.dimension=16", "rvq.codebook_size=32", "model.semantic_dim=24",
         "model.aligner_dim=16"]
CONFIGS = {"encodec": ("configs/base.yaml", SMALL),
           "speechtokenizer": ("configs/speechtokenizer.yaml", SMALL)}
RTOL = 1e-4  # "within 1e-4 relative": max |ours − theirs| / max |theirs|


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@torch.no_grad()
def _peer(name: str, wav_bct: torch.Tensor) -> torch.nn.Module:
    """A seeded random peer whose codebooks are its own latents plus noise (so nearest-code choices are real
    decisions, not one code for every frame), with weight-norm magnitudes g moved away from ‖v‖."""
    path, overrides = CONFIGS[name]
    model = torch_peers.build_peer(name, path, seed=0, overrides=overrides)
    generator = torch.Generator().manual_seed(1)
    for param_name, param in model.named_parameters():
        if param_name.endswith(("weight_g", "original0")):
            param.mul_(1.0 + 0.5 * torch.rand(param.shape, generator=generator))
    z_bdt = model.encoder(wav_bct)
    z_nd = z_bdt.transpose(1, 2).reshape(-1, z_bdt.shape[1])
    spread = z_nd.std(0).mean()
    for level, codebook in enumerate(torch_peers.peer_codebooks(model)):
        rows = torch.randint(0, z_nd.shape[0], (codebook.embed.shape[0],), generator=generator)
        centre = z_nd[rows] if level == 0 else 0.0  # later levels quantize residuals, which are centred
        codebook.embed.copy_(centre + spread * torch.randn(codebook.embed.shape, generator=generator))
        codebook.embed_avg.copy_(codebook.embed * 3.0)
        codebook.cluster_size.fill_(3.0)
    return model


def _imported(name: str, model: torch.nn.Module) -> Codec:
    path, overrides = CONFIGS[name]
    codec = Codec(config_lib.load(path, overrides), rngs=nnx.Rngs(0))
    convert.import_peer(codec, name, {k: v.numpy() for k, v in model.state_dict().items()})
    return codec


@pytest.mark.parametrize("name", ["encodec", "speechtokenizer"])
def test_latents_codes_and_audio_equal_the_peer(name):
    wav = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (2, 1, 8000)).astype(np.float32))
    model = _peer(name, wav)
    codec = _imported(name, model)
    with torch.no_grad():
        z_bdt = model.encoder(wav)
        if name == "encodec":
            codes_qbt = model.quantizer.encode(z_bdt, bandwidth=torch_peers.peer_bandwidth(codec.config))
        else:
            codes_qbt = model.quantizer.encode(z_bdt, n_q=codec.config.rvq.n_q)
        audio = model.decoder(model.quantizer.decode(codes_qbt))[:, 0].numpy()
    codes_bqt = codes_qbt.transpose(0, 1).numpy()
    assert len(np.unique(codes_bqt[:, 0])) > 5  # the test decides between codes, not trivially
    wav_bn = jnp.asarray(wav[:, 0].numpy())
    latents = np.asarray(codec._encode_latents(wav_bn))
    assert _relative(latents, z_bdt.transpose(1, 2).numpy()) < RTOL
    ours_codes = np.asarray(codec.encode(wav_bn))
    np.testing.assert_array_equal(ours_codes, codes_bqt)
    ours_audio = np.asarray(codec.decode(jnp.asarray(codes_bqt)))
    assert ours_audio.shape == audio.shape
    assert _relative(ours_audio, audio) < RTOL
    if name == "speechtokenizer":  # the level-1 → HuBERT transform is our semantic head
        with torch.no_grad():
            _, _, feature = model(wav, n_q=codec.config.rvq.n_q)
        ours_feature = np.asarray(codec(wav_bn).semantic_btd)
        assert _relative(ours_feature, feature.numpy()) < RTOL


@pytest.mark.parametrize("name", ["encodec", "speechtokenizer"])
def test_export_gives_back_the_peer_state_dict(name):
    wav = torch.zeros(1, 1, 3200)
    model = _peer(name, wav)
    codec = _imported(name, model)
    exported = convert.export_peer(codec, name)
    original = model.state_dict()
    assert set(exported) == set(original)
    for key, value in original.items():
        np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)
    model.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=True)


def test_import_is_strict_about_missing_extra_and_misshapen_tensors():
    wav = torch.zeros(1, 1, 3200)
    model = _peer("encodec", wav)
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    path, overrides = CONFIGS["encodec"]
    config = config_lib.load(path, overrides)

    def run(tensors, config=config):
        return convert.import_peer(Codec(config, rngs=nnx.Rngs(0)), "encodec", tensors)

    missing = {k: v for k, v in tensors.items() if "encoder.layers.13.lstm.weight_hh_l1" not in k}
    with pytest.raises(InteropError, match=r"no 'encoder\.layers\.13\.lstm\.weight_hh_l1'"):
        run(missing)
    with pytest.raises(InteropError, match="no place for, e.g. 'extra.weight'"):
        run({**tensors, "extra.weight": np.zeros(3, np.float32)})
    wider = config_lib.load(path, [*overrides, "model.dimension=24"])
    with pytest.raises(InteropError, match="but --config gives"):
        run(tensors, wider)
    # Fewer levels than the checkpoint: the first ones are a lower bitrate of the same codec.
    fewer = config_lib.load(path, [*overrides, "rvq.n_q=3"])
    assert run(tensors, fewer).dropped_levels == 5
    # A conv saved with its weight norm removed is re-parameterised: the same effective weight.
    plain = dict(tensors)
    g = plain.pop("encoder.layers.0.conv.parametrizations.weight.original0")
    v = plain.pop("encoder.layers.0.conv.parametrizations.weight.original1")
    plain["encoder.layers.0.conv.weight"] = g * v / np.linalg.norm(v, axis=(1, 2), keepdims=True)
    codec = Codec(config, rngs=nnx.Rngs(0))
    assert convert.import_peer(codec, "encodec", plain).reparameterised == 1
    np.testing.assert_allclose(np.asarray(codec.encoder.conv_in.kernel()), plain["encoder.layers.0.conv.weight"]
                               .transpose(2, 1, 0), rtol=1e-6)


def test_peer_config_json_disagreeing_with_the_config_is_named():
    path, overrides = CONFIGS["speechtokenizer"]
    config = config_lib.load(path, overrides)
    theirs = convert.peer_config("speechtokenizer", config)
    assert convert.config_mismatches("speechtokenizer", theirs, config) == []
    assert convert.config_mismatches("speechtokenizer", {**theirs, "dimension": 1024}, config) == [
        "model.dimension: checkpoint 1024, config 16"]
    encodec = config_lib.load(*CONFIGS["encodec"])
    assert convert.config_mismatches("encodec", convert.peer_config("encodec", encodec), encodec) == []
    with pytest.raises(InteropError, match="no bidirectional"):
        convert.check_model_supported("encodec", config)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jaxcodec", *args], capture_output=True, text=True)


def test_import_export_load_round_trip_through_files(tmp_path):
    """A transformers folder (config.json + model.safetensors) and a `.pt` (read by the torch subprocess) import
    to the same workdir weights; the exported files (our names and the peer's) load back to the same codes."""
    wav = torch.from_numpy(np.random.default_rng(2).normal(0, 0.1, (1, 1, 6400)).astype(np.float32))
    model = _peer("encodec", wav)
    model.save_pretrained(tmp_path / "hf")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "peer.pt")
    with torch.no_grad():
        bandwidth = torch_peers.peer_bandwidth(config_lib.load(*CONFIGS["encodec"]))
        codes = model.encode(wav, bandwidth=bandwidth).audio_codes[0, 0].numpy()
    sets = [arg for item in CONFIGS["encodec"][1] for arg in ("--set", item)]
    done = _cli("import", "--from", "encodec", str(tmp_path / "hf"), "--config", "configs/base.yaml", *sets,
                "-o", str(tmp_path / "W"))
    assert done.returncode == 0, done.stderr
    assert "semantic_head, acoustic_aligner" in done.stdout
    provenance = json.loads((tmp_path / "W" / "import.json").read_text())
    assert provenance["weights_sha256"] == files.sha256(tmp_path / "hf" / "model.safetensors")
    again = _cli("import", "--from", "encodec", str(tmp_path / "W"), *sets, "-o", str(tmp_path / "W"))
    assert again.returncode == 2 and "no weights file" in again.stderr
    import jaxcodec

    assert _cli("export", str(tmp_path / "W"), "-o", str(tmp_path / "jaxcodec" / "model.safetensors")).returncode == 0
    imported = jaxcodec.load(tmp_path / "W")
    files.export_file(imported.codec(), imported.config, tmp_path / "encodec" / "model.safetensors", "encodec")

    for source in (tmp_path / "W", tmp_path / "jaxcodec" / "model.safetensors",
                   tmp_path / "encodec" / "model.safetensors"):
        np.testing.assert_array_equal(jaxcodec.load(source, bucket_seconds=0).encode(wav[0, 0].numpy()), codes)
    # the .pt goes through teachers.torch_state (weights only) and gives the same tensors
    tensors, _, weights = files.read_checkpoint(tmp_path / "peer.pt")
    assert weights.suffix == ".pt"
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(tensors[key], value.numpy())


def test_bad_files_get_one_line_errors(tmp_path):
    (tmp_path / "notes.safetensors").write_text("not a tensor file")
    (tmp_path / "bad.pt").write_bytes(b"\x80\x04garbage")
    for source, message in ((tmp_path / "missing", "no such file"),
                            (tmp_path / "notes.safetensors", "not a readable safetensors file"),
                            (tmp_path / "bad.pt", "not a PyTorch checkpoint")):
        done = _cli("import", "--from", "encodec", str(source), "-o", str(tmp_path / "W"))
        assert done.returncode == 2
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    from safetensors.numpy import save_file

    save_file({"encoder.layers.0.conv.bias": np.zeros(4, np.float32)}, str(tmp_path / "peer.safetensors"))
    with pytest.raises(InteropError, match="not a file written by `jaxcodec export`"):
        files.load_exported(tmp_path / "peer.safetensors")


@pytest.mark.parametrize(("text", "named"), [
    ("{not json", "not a readable JSON file"),
    ("[1, 2]", "must hold a JSON object, got a list"),
    ('{"codebook_size": "1024"}', "'codebook_size' must be a positive integer"),
    ('{"upsampling_ratios": [8, 5, 0, 2]}', "'upsampling_ratios' must be a non-empty list of positive integers"),
])
def test_malformed_peer_config_json_is_one_line_naming_the_file_and_key(tmp_path, capsys, text, named):
    """Issue 18 #12: each of these was a traceback (JSONDecodeError, AttributeError, ZeroDivisionError…)."""
    from safetensors.numpy import save_file

    from jaxcodec import commands

    save_file({"encoder.layers.0.conv.bias": np.zeros(4, np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(text)
    assert commands.main(["import", "--from", "encodec", str(tmp_path), "-o", str(tmp_path / "W")]) == 2
    err = capsys.readouterr().err
    assert named in err and str(tmp_path / "config.json") in err and len(err.strip().splitlines()) == 1, err
