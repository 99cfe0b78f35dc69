"""`hfsti eval`: a checkpoint over a SUN-SEG root, and a folder of predictions against GT."""

import json

import numpy as np
import pytest
import torch
from helpers import CVC612
from PIL import Image
from sixteen_bit import copy_tree_16bit

from hfsti import HFSTIConfig, HFSTINet, save_checkpoint
from hfsti.cli import main
from hfsti.data import synthetic_clip
from hfsti.evaluate import evaluate_model
from hfsti.metrics import METRIC_KEYS, score_folders

needs_cvc612 = pytest.mark.skipif(not CVC612.is_dir(), reason="../shared/data/cvc612 is absent")


@needs_cvc612
def test_eval_checkpoint_then_rescore_saved_predictions(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "model.safetensors"
    save_checkpoint(HFSTINet(HFSTIConfig(channels=8, rmp_heads=2, input_size=64)), weights)
    args = ["eval", "--weights", str(weights), "--data", str(CVC612), "--cases", "seq10"]
    args += ["--json", str(tmp_path / "a.json"), "--save-preds", str(tmp_path / "preds")]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "seq10" in table and "overall" in table and "meanDice" in table
    a = json.loads((tmp_path / "a.json").read_text())
    assert list(a) == ["overall", "cases"] and list(a["cases"]) == ["seq10"]
    assert list(a["overall"]) == list(METRIC_KEYS) == list(a["cases"]["seq10"])
    assert all(0 <= v <= 1 for v in a["overall"].values())
    assert len(list((tmp_path / "preds" / "seq10").glob("*.png"))) == 6

    gt_root = tmp_path / "gt"
    (gt_root / "GT").mkdir(parents=True)
    (gt_root / "GT" / "seq10").symlink_to(CVC612 / "GT" / "seq10")
    args = ["eval", "--pred-root", str(tmp_path / "preds"), "--gt-root", str(gt_root)]
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    for key in METRIC_KEYS:  # the saved masks are the same maps, rounded to 8 bits
        assert b["overall"][key] == pytest.approx(a["overall"][key], abs=2e-2), key


@needs_cvc612
def test_eval_reports_missing_predictions(tmp_path, capsys):
    (tmp_path / "preds" / "seq10").mkdir(parents=True)
    args = ["eval", "--pred-root", str(tmp_path / "preds"), "--gt-root", str(CVC612)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "seq01" in err or "seq10" in err
    assert main(["eval", "--data", str(CVC612)]) == 2
    assert "--weights and --data" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# A small synthetic SUN-SEG tree (no data needed)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model, its weights, and a tree of 3 cases x 4 frames of 40x32 with soft-edged
    masks (values 100 and 200 on the rims, either side of the threshold)."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = HFSTINet(HFSTIConfig(channels=8, rmp_heads=2, input_size=32)).eval()
    save_checkpoint(model, root / "w.safetensors")
    for k, case in enumerate(["c1", "c2", "c10"]):
        frames, masks = synthetic_clip(4, 32, 40, seed=k)
        for i, (frame, mask) in enumerate(zip(frames, masks)):
            gt = np.where(mask, 255, 0).astype(np.uint8)
            gt[np.roll(mask, 1, 0) & ~mask] = 200
            gt[np.roll(mask, -1, 0) & ~mask] = 100
            for sub, img in (("Frame", frame), ("GT", gt)):
                (root / "data" / sub / case).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / "data" / sub / case / f"{i}.png")
    return model, str(root / "w.safetensors"), root / "data"


def _messages(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("hfsti ")]


def test_eval_weights_16bit_data_and_drop_ends(tiny, tmp_path, capsys):
    model, weights, data = tiny
    deep = copy_tree_16bit(data, tmp_path / "deep")
    dropped = evaluate_model(model, data, ["c1"], progress=False, drop_ends=True)
    args = ["eval", "--weights", weights, "--data", str(deep), "--cases", "c1", "--drop-ends"]
    assert main([*args, "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == dropped  # 16 bits read as 8
    assert evaluate_model(model, data, ["c1"], progress=False) != dropped


def test_eval_weights_names_an_empty_case(tiny):
    model, _, data = tiny
    (data / "Frame" / "c7").mkdir()
    try:
        with (
            pytest.warns(UserWarning, match="empty case folder"),
            pytest.raises(ValueError, match=r"\['c7'\] not in .*c7: no frames"),
        ):
            evaluate_model(model, data, ["c7"], progress=False)
    finally:
        (data / "Frame" / "c7").rmdir()


def _write_predictions(data, preds) -> None:
    """Soft, noisy uint8 predictions for every GT frame of ``data``."""
    rng = np.random.default_rng(1)
    for gt_path in sorted((data / "GT").glob("*/*.png")):
        gt = np.asarray(Image.open(gt_path).convert("L"), dtype=np.float64) / 255
        pred = np.clip(np.roll(gt, 2, 1) + rng.normal(0, 0.2, gt.shape), 0, 1)
        (preds / gt_path.parent.name).mkdir(parents=True, exist_ok=True)
        Image.fromarray((pred * 255).astype(np.uint8)).save(
            preds / gt_path.parent.name / gt_path.name
        )


def test_eval_pred_root_cases_drop_ends_and_empty_cases(tiny, tmp_path, capsys):
    _, _, data = tiny
    preds = tmp_path / "preds"
    _write_predictions(data, preds)
    args = ["eval", "--pred-root", str(preds), "--gt-root", str(data), "--cases", "c2"]
    assert main([*args, "--json", str(tmp_path / "c2.json"), "--drop-ends"]) == 0
    c2 = json.loads((tmp_path / "c2.json").read_text())
    assert list(c2["cases"]) == ["c2"]
    assert c2 == score_folders(preds, data, cases=["c2"], drop_ends=True)
    assert c2 != score_folders(preds, data, cases=["c2"])
    capsys.readouterr()
    (data / "GT" / "c7").mkdir()  # an empty case folder: reported in one line
    try:
        assert main(["eval", "--pred-root", str(preds), "--gt-root", str(data)]) == 0
    finally:
        (data / "GT" / "c7").rmdir()
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and "warning: skipped 1 empty case folder" in err[0], err
    assert err[0].endswith(": c7")


def test_eval_json_under_a_file_is_one_line(tiny, tmp_path, capsys):
    _, weights, data = tiny
    (tmp_path / "file").write_text("x")
    args = ["eval", "--weights", weights, "--data", str(data), "--cases", "c1"]
    assert main([*args, "--json", str(tmp_path / "file" / "m.json")]) == 2
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and "--json" in err[0] and "is a file" in err[0], err
    assert main([*args, "--json", str(tmp_path)]) == 2  # a folder
    assert "--json" in capsys.readouterr().err
