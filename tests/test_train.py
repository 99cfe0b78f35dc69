"""Training: augmentation, exact resume, the DDP path, and a real-data smoke run."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import CVC612, assert_rel_close
from safetensors.torch import load_file

import hfsti.train
from hfsti import HFSTIConfig, HFSTINet, load_checkpoint
from hfsti.cli import main
from hfsti.data.augment import ClipAugment
from hfsti.evaluate import evaluate_model
from hfsti.train import TrainConfig, train

TINY = HFSTIConfig(channels=8, rmp_heads=2, input_size=32)


def tiny_run(out, steps, **overrides):
    cfg = dict(
        out=str(out),
        size=32,
        clip_len=2,
        batch_size=2,
        steps=steps,
        warmup=1,
        workers=0,
        save_every=2,
        log_every=1,
        synthetic_clips=6,
    )
    cfg.update(overrides)
    return TrainConfig(**cfg)


def test_augment_is_shared_across_a_clip_and_seeded():
    frames = torch.rand(1, 3, 40, 40).expand(3, 3, 40, 40).clone()
    masks = (torch.rand(1, 1, 40, 40) > 0.5).float().expand(3, 1, 40, 40).clone()
    f1, m1 = ClipAugment()(frames, masks, torch.Generator().manual_seed(3))
    f2, m2 = ClipAugment()(frames, masks, torch.Generator().manual_seed(3))
    torch.testing.assert_close(f1, f2, rtol=0, atol=0)
    torch.testing.assert_close(f1[0], f1[2], rtol=0, atol=0)  # same transform for every frame
    assert set(m1.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(f1, frames)
    f3, _ = ClipAugment()(frames, masks, torch.Generator().manual_seed(4))
    assert not torch.equal(f1, f3)


def test_resume_continues_exactly(tmp_path, monkeypatch):
    straight = train(tiny_run(tmp_path / "a", steps=4), TINY)

    def save_then_crash(*args):  # the run is killed right after its step-2 checkpoint
        real_save(*args)
        raise KeyboardInterrupt

    real_save = hfsti.train._save
    monkeypatch.setattr(hfsti.train, "_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_run(tmp_path / "b", steps=4), TINY)
    monkeypatch.undo()
    resumed = train(tiny_run(tmp_path / "b", steps=4), TINY)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    with (tmp_path / "b" / "log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    assert (tmp_path / "b" / "loss.png").stat().st_size > 1000
    assert load_checkpoint(resumed).config == TINY


def test_ddp_two_processes(tmp_path):
    script = (
        "from hfsti import HFSTIConfig\n"
        "from hfsti.train import TrainConfig, train\n"
        f"train(TrainConfig(out={str(tmp_path)!r}, size=32, clip_len=2, batch_size=1, steps=2,"
        " warmup=1, workers=0, synthetic_clips=4, log_every=1),"
        " HFSTIConfig(channels=8, rmp_heads=2, input_size=32))\n"
    )
    (tmp_path / "run.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    done = subprocess.run(
        [*cmd, str(tmp_path / "run.py")], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "model.safetensors").is_file()
    with (tmp_path / "log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2]


def test_bad_training_config_is_named(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path), "--amp", "fp8"])
    with pytest.raises(ValueError, match="amp: expected auto"):
        tiny_run(tmp_path, steps=1, amp="fp8")
    with pytest.raises(ValueError, match="batch_size: 64 clips per rank"):
        train(tiny_run(tmp_path, steps=1, batch_size=64), TINY)


@pytest.mark.skipif(not CVC612.is_dir(), reason="../shared/data/cvc612 is absent")
def test_cvc612_smoke_loss_falls_and_dice_rises(tmp_path):
    """Train on sequences 1-15, evaluate on 16-20: a few steps at 64x64 on CPU."""
    train_cases = [f"seq{i:02d}" for i in range(1, 16)]
    test_cases = [f"seq{i:02d}" for i in range(16, 21)]
    config = HFSTIConfig(channels=16, rmp_heads=2, input_size=64)
    torch.manual_seed(0)  # the seed train() starts from: the same initial weights
    before = evaluate_model(HFSTINet(config), CVC612, test_cases, progress=False)
    cfg = tiny_run(
        tmp_path / "run",
        steps=40,
        data=[str(CVC612)],
        cases=train_cases,
        size=64,
        lr=1e-3,
        warmup=5,
        save_every=40,
    )
    model = load_checkpoint(train(cfg, config))
    after = evaluate_model(model, CVC612, test_cases, progress=False)
    with (tmp_path / "run" / "log.csv").open() as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    summary = {"loss": [first, last], "before": before["overall"], "after": after["overall"]}
    print(json.dumps(summary))
    assert last < 0.95 * first
    assert after["overall"]["meanDice"] > before["overall"]["meanDice"] + 0.02


@pytest.mark.skipif(not CVC612.is_dir(), reason="../shared/data/cvc612 is absent")
def test_cvc612_fused_training_matches_reference(tmp_path):
    """Two steps on real clips from one seed: the fused model (Triton kernels, interpreted on
    CPU) follows the reference's loss curve and weights within float32 rounding."""
    results = {}
    for backend in ("reference", "triton"):
        cfg = tiny_run(tmp_path / backend, steps=2, data=[str(CVC612)], cases=["seq01"])
        cfg.batch_size = 1
        final = train(cfg, dataclasses.replace(TINY, backend=backend))
        with (tmp_path / backend / "log.csv").open() as f:
            losses = torch.tensor([float(r["loss"]) for r in csv.DictReader(f)])
        results[backend] = (losses, load_file(str(final)))
    (ref_loss, ref_w), (loss, w) = results["reference"], results["triton"]
    assert_rel_close(loss, ref_loss, 1e-5, "loss curve")
    flat = torch.cat([w[k].flatten().double() for k in ref_w if w[k].is_floating_point()])
    ref_flat = torch.cat([ref_w[k].flatten().double() for k in ref_w if w[k].is_floating_point()])
    assert_rel_close(flat, ref_flat, 1e-5, "weights after two steps")
