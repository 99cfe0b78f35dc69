"""`hfsti eval`: a checkpoint over a SUN-SEG root, and a folder of predictions against GT."""

import json

import pytest
import torch
from helpers import CVC612

from hfsti import HFSTIConfig, HFSTINet, save_checkpoint
from hfsti.cli import main
from hfsti.metrics import METRIC_KEYS

pytestmark = pytest.mark.skipif(not CVC612.is_dir(), reason="../shared/data/cvc612 is absent")


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


def test_eval_reports_missing_predictions(tmp_path, capsys):
    (tmp_path / "preds" / "seq10").mkdir(parents=True)
    args = ["eval", "--pred-root", str(tmp_path / "preds"), "--gt-root", str(CVC612)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "seq01" in err or "seq10" in err
    assert main(["eval", "--data", str(CVC612)]) == 2
    assert "--weights and --data" in capsys.readouterr().err
