"""Whole-model checkpoints (safetensors + config) and backbone weight files."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from hfsti import HFSTIConfig, HFSTINet, load_checkpoint, save_checkpoint
from hfsti.checkpoint import read_metadata
from hfsti.model.pvt_v2 import load_pvt_v2_weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(1)
    model = HFSTINet(HFSTIConfig(channels=8, rmp_heads=2, memory_frames=2))
    with torch.no_grad():  # make the BatchNorm statistics non-trivial too
        model.train()(torch.rand(2, 2, 3, 64, 64))
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(model.eval(), path, metadata={"step": 7})
    return model, path


def test_round_trip_restores_config_and_outputs(trained):
    model, path = trained
    loaded = load_checkpoint(path).eval()
    assert loaded.config == model.config
    assert read_metadata(path)["step"] == "7"
    frames = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames), model(frames), rtol=0, atol=0)


def test_wrong_keys_are_named(trained, tmp_path):
    _, path = trained
    state = load_file(str(path))
    meta = read_metadata(path)
    state["decoder.extra.weight"] = torch.zeros(1)
    del state["rmp.alpha"]
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=meta)
    with pytest.raises(ValueError, match=r"missing \(1\): rmp.alpha.*unexpected \(1\): decoder"):
        load_checkpoint(bad)


def test_foreign_files_are_rejected(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="not an HFSTI-Net checkpoint"):
        load_checkpoint(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError, match="weights: no such file"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_backbone_weights_load_into_the_model(tmp_path):
    torch.manual_seed(2)
    source = HFSTINet(HFSTIConfig(channels=8, rmp_heads=2))
    path = tmp_path / "pvt_v2_b2.pth"
    torch.save(source.backbone.state_dict(), path)
    target = HFSTINet(HFSTIConfig(channels=8, rmp_heads=2))
    load_pvt_v2_weights(target.backbone, path)
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(target.backbone.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    "config, problem",
    [
        ("{not json", "invalid model config: Expecting property name"),
        ('{"channels": -1}', "invalid model config: channels: expected a positive integer"),
        ('{"colour": 3}', r"invalid model config: config: unknown keys \['colour'\]"),
        ("[8, 2]", "invalid model config: expected a JSON object, got list"),
    ],
)
def test_a_bad_stored_config_names_the_file(trained, tmp_path, config, problem):
    _, path = trained
    bad = tmp_path / "bad-config.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={**read_metadata(path), "config": config})
    with pytest.raises(ValueError, match=f"weights: {bad} has an {problem}"):
        load_checkpoint(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_map_location_cuda_without_cuda_is_named(trained):
    _, path = trained
    with pytest.raises(ValueError, match="map_location: cuda requested but CUDA is not available"):
        load_checkpoint(path, map_location="cuda")
    with pytest.raises(ValueError, match="map_location: not a device: 'gpu'"):
        load_checkpoint(path, map_location="gpu")


def test_saving_is_atomic(trained, tmp_path, monkeypatch):
    model, path = trained
    target = tmp_path / "model.safetensors"
    target.write_bytes(path.read_bytes())

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hfsti.checkpoint.save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(model, target)
    assert target.read_bytes() == path.read_bytes()  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary left
