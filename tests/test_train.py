"""Training: augmentation, exact resume, the DDP path, a real-data smoke run, and a run that
never loses work or good weights (divergence, resume checks, signals, lock, data scan)."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
from helpers import CVC612, assert_rel_close
from PIL import Image
from safetensors.torch import load_file

import hfsti.train
from hfsti import HFSTIConfig, HFSTINet, load_checkpoint
from hfsti.checkpoint import read_metadata
from hfsti.cli import main
from hfsti.data.augment import ClipAugment
from hfsti.evaluate import evaluate_model
from hfsti.train import TrainConfig, TrainingDiverged, _nonfinite, train

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


def logged_steps(out):
    with (out / "log.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


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
    straight = train(tiny_run(tmp_path / "a", steps=4, save_every=1), TINY)

    def killed_while_saving_step_3(model, optimizer, scheduler, scaler, step, *rest):
        if step == 3:  # the process dies after logging step 3, before its checkpoint exists
            raise KeyboardInterrupt
        real_save(model, optimizer, scheduler, scaler, step, *rest)

    real_save = hfsti.train.save
    monkeypatch.setattr(hfsti.train, "save", killed_while_saving_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_run(tmp_path / "b", steps=4, save_every=1), TINY)
    monkeypatch.undo()
    assert logged_steps(tmp_path / "b") == [1, 2, 3]
    resumed = train(tiny_run(tmp_path / "b", steps=4, save_every=1), TINY)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert logged_steps(tmp_path / "b") == [1, 2, 3, 4]  # step 3 once: the stale row was cut
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


# ----------------------------------------------------------- no lost work, no bad weights

CLI_TINY = ["--size", "32", "--clip-len", "2", "--batch-size", "2", "--warmup", "1"]
CLI_TINY += ["--workers", "0", "--log-every", "1", "--channels", "8"]


@pytest.fixture(scope="module")
def run_at_step_2(tmp_path_factory):
    """A finished 2-step run folder (checkpoint at step 2); tests work on copies of it."""
    out = tmp_path_factory.mktemp("base") / "run"
    train(tiny_run(out, steps=2), TINY)
    return out


@pytest.fixture
def run_copy(run_at_step_2, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_at_step_2, out)
    return out


def inject(monkeypatch, at_call, change):
    """From call ``at_call`` of the training loss on, return ``change(loss, logits)``."""
    real, calls = hfsti.train.HybridLoss, []

    def factory(*args, **kwargs):
        criterion = real(*args, **kwargs)

        def loss_fn(logits, masks):
            calls.append(1)
            loss = criterion(logits, masks)
            return change(loss, logits) if len(calls) >= at_call else loss

        return loss_fn

    monkeypatch.setattr(hfsti.train, "HybridLoss", factory)


def cli_error(capsys):
    """The one line the CLI wrote to stderr (the progress bar shares it), no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("hfsti ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def assert_finite_checkpoint(path, step=None):
    assert step is None or read_metadata(path)["step"] == str(step)
    for key, value in load_file(str(path)).items():
        assert value.isfinite().all(), key


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(run_copy, monkeypatch):
    before = (run_copy / "last.safetensors").read_bytes()
    inject(monkeypatch, 1, lambda loss, logits: loss * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"step 3: non-finite loss \(nan\).*step 2\) is"):
        train(tiny_run(run_copy, steps=3), TINY)  # --steps may grow on resume
    assert (run_copy / "last.safetensors").read_bytes() == before
    assert torch.load(run_copy / "last_state.pt", weights_only=True)["step"] == 2


def test_nonfinite_gradients_stop_before_the_first_save(tmp_path, monkeypatch):
    # sqrt at 0: the loss stays finite, its gradient is inf * 0 = nan.
    inject(monkeypatch, 1, lambda loss, logits: loss + torch.sqrt(0 * logits.sum()))
    with pytest.raises(TrainingDiverged, match="step 1: non-finite gradients.*no checkpoint"):
        train(tiny_run(tmp_path, steps=2, save_every=1), TINY)
    assert not (tmp_path / "last.safetensors").exists()


def test_huge_lr_exits_nonzero_without_writing_nonfinite_weights(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path), "--steps", "3", "--save-every", "1", "--lr", "1e6"]
    assert main(args + CLI_TINY) == 2
    err = cli_error(capsys)
    assert "non-finite" in err and "step " in err, err
    assert not (tmp_path / "model.safetensors").exists()
    if (tmp_path / "last.safetensors").exists():
        assert_finite_checkpoint(tmp_path / "last.safetensors")


def test_fp16_skipped_steps_go_on_until_the_scale_is_spent():
    """Non-finite gradients under fp16 are the GradScaler's usual skipped steps, unless the loss
    scale is already <= 1 (the unscaled step overflows too); a non-finite loss always stops."""
    finite, inf = torch.tensor(1.0), torch.tensor(float("inf"))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    assert _nonfinite(False, True, finite, inf, scaler) is None
    assert "non-finite loss" in _nonfinite(True, True, inf, inf, scaler)
    spent = torch.amp.GradScaler("cpu", init_scale=1.0)
    assert "loss scale 1" in _nonfinite(False, True, finite, inf, spent)
    plain = torch.amp.GradScaler("cpu", enabled=False)
    assert "non-finite gradients" in _nonfinite(False, True, finite, inf, plain)
    assert _nonfinite(False, False, finite, finite, plain) is None


def test_resume_refuses_a_missing_or_damaged_state(run_copy, capsys):
    last, state = run_copy / "last.safetensors", run_copy / "last_state.pt"
    good_state, weights, log = state.read_bytes(), last.read_bytes(), (run_copy / "log.csv")
    rows = log.read_text()
    tampered = torch.load(state, weights_only=True)
    tampered["step"] = 1
    cases = {
        "is missing": None,
        "not a readable training state": good_state[: len(good_state) // 2],
        "not a readable training state ": os.urandom(2000),
        "at step 2 but .* at step 1": tampered,
    }
    for message, content in cases.items():
        state.unlink(missing_ok=True)
        if isinstance(content, bytes):
            state.write_bytes(content)
        elif content is not None:
            torch.save(content, state)
        with pytest.raises(ValueError, match=message.strip() + ".*--restart.*--init-from"):
            train(tiny_run(run_copy, steps=4), TINY)
        assert last.read_bytes() == weights and log.read_text() == rows  # nothing overwritten
    state.write_bytes(os.urandom(2000))  # the CLI: one line naming the file, exit 2
    assert main(["train", "--out", str(run_copy), "--steps", "4", *CLI_TINY]) == 2
    err = cli_error(capsys)
    assert str(state) in err, err
    state.unlink()  # the way forward: a new run from those weights
    with pytest.raises(ValueError, match="init_from: .* another model config: channels 16"):
        train(tiny_run(run_copy, steps=1, restart=True, init_from=str(last)), HFSTIConfig(16))
    train(tiny_run(run_copy, steps=1, restart=True, init_from=str(last)), TINY)
    assert logged_steps(run_copy) == [1]
    assert torch.load(state, weights_only=True)["step"] == 1


def test_a_state_file_carrying_code_is_refused(run_copy, tmp_path):
    state, marker = run_copy / "last_state.pt", tmp_path / "code-ran"
    payload = torch.load(state, weights_only=True)
    payload["scaler"] = RunsCode(str(marker))
    torch.save(payload, state)
    with pytest.raises(ValueError, match=r"refused .*last_state.pt: it asks for \w+\.mkdir"):
        train(tiny_run(run_copy, steps=3), TINY)
    assert not marker.exists()
    torch.load(state, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()


class RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_resume_refuses_contradicting_options(run_copy):
    with pytest.raises(
        ValueError,
        match=r"other settings: size 64 \(stored 32\), lr 0.1 .*"
        r"input_size 64 \(stored 32\)",
    ):
        train(
            tiny_run(run_copy, steps=2, size=64, lr=0.1), dataclasses.replace(TINY, input_size=64)
        )
    with pytest.raises(ValueError, match=r"channels 16 \(stored 8\)"):
        train(tiny_run(run_copy, steps=2), dataclasses.replace(TINY, channels=16))
    with pytest.raises(ValueError, match=r"init_from 'other.safetensors' \(stored None\)"):
        train(tiny_run(run_copy, steps=2, init_from="other.safetensors"), TINY)
    # Allowed: the workers, the log and save periods, the backend (here at the last step).
    allowed = tiny_run(run_copy, steps=2, workers=1, log_every=5, save_every=7)
    train(allowed, dataclasses.replace(TINY, backend="triton"))
    with pytest.raises(ValueError, match="steps: the run .* is already at step 2 > 1"):
        train(tiny_run(run_copy, steps=1), TINY)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_current_step_and_exits_nonzero(tmp_path, monkeypatch, capsys, signum):
    def refuse(*_):  # a signal train does not handle fails the test, not the test run
        raise AssertionError("the signal was not handled by train")

    previous = {s: signal.signal(s, refuse) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        inject(monkeypatch, 1, lambda loss, logits: os.kill(os.getpid(), signum) or loss)
        args = ["train", "--out", str(tmp_path), "--steps", "3", "--save-every", "100"]
        assert main(args + CLI_TINY) == 128 + signum  # --data omitted: synthetic clips
        assert all(signal.getsignal(s) is refuse for s in previous)  # handlers given back
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    err = cli_error(capsys)
    assert err.startswith(f"hfsti train: stopped by {signal.Signals(signum).name} at step 1"), err
    assert_finite_checkpoint(tmp_path / "last.safetensors", 1)
    if signum == signal.SIGINT:
        monkeypatch.undo()
        assert main(args + CLI_TINY) == 0
        assert logged_steps(tmp_path) == [1, 2, 3]


def test_data_given_without_a_root_is_an_error(tmp_path, capsys):
    for data in (["--data"], ["--data", ""]):
        args = ["train", "--out", str(tmp_path / "run"), "--steps", "1", *data, *CLI_TINY]
        assert main(args) == 2
        err = cli_error(capsys)
        assert "data" in err and "synthetic" in err, err
    assert not (tmp_path / "run" / "log.csv").exists()


def test_a_second_run_into_one_folder_is_refused(tmp_path):
    lock = tmp_path / "train.lock"
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a live run holds the folder
    with pytest.raises(ValueError, match=f"in use by another training run \\(pid {os.getpid()}"):
        train(tiny_run(tmp_path, steps=1), TINY)
    assert lock.exists() and not (tmp_path / "log.csv").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")  # a stale lock is taken over
    train(tiny_run(tmp_path, steps=1), TINY)
    assert not lock.exists() and logged_steps(tmp_path) == [1]


def write_tiny_dataset(root, cases=2, frames=3, side=32):
    for c in range(cases):
        for kind in ("Frame", "GT"):
            (root / kind / f"case{c}").mkdir(parents=True)
        for i in range(frames):
            rgb = (torch.rand(side, side, 3) * 255).to(torch.uint8).numpy()
            Image.fromarray(rgb).save(root / "Frame" / f"case{c}" / f"{i}.png")
            mask = ((torch.rand(side, side) > 0.5) * 255).to(torch.uint8).numpy()
            Image.fromarray(mask).save(root / "GT" / f"case{c}" / f"{i}.png")


def test_an_unreadable_frame_or_mask_is_found_before_training(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_tiny_dataset(root)
    mask = root / "GT" / "case1" / "2.png"
    mask.write_bytes(mask.read_bytes()[:-40])  # truncated: the header still reads
    frame = root / "Frame" / "case0" / "1.png"
    frame.write_bytes(b"not an image")

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(hfsti.train, "DataLoader", no_training)
    with pytest.raises(ValueError, match="before training") as caught:
        train(tiny_run(tmp_path / "run", steps=1, data=[str(root)]), TINY)
    message = str(caught.value)
    assert str(mask) in message and str(frame) in message and "2 unreadable" in message


def test_out_that_is_a_file_or_read_only_is_named(tmp_path, monkeypatch, capsys):
    taken = tmp_path / "file"
    taken.write_text("x")
    assert main(["train", "--out", str(taken), "--steps", "1", *CLI_TINY]) == 2
    err = cli_error(capsys)
    assert f"out: {taken} is a file" in err, err

    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_open = os.open

    def refuse(path, *args, **kwargs):  # root ignores chmod, so refuse writes here directly
        if str(path).startswith(str(read_only)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert main(["train", "--out", str(read_only), "--steps", "1", *CLI_TINY]) == 2
    err = cli_error(capsys)
    assert f"out: cannot write to {read_only}" in err, err


def test_backbone_or_init_from_that_is_not_weights_is_named(tmp_path, capsys):
    junk = tmp_path / "pvt_v2_b2.pth"
    junk.write_bytes(os.urandom(512))
    for path, message in ((junk, "is not a PVTv2-b2 weights file"), (tmp_path / "no", "no such")):
        args = ["train", "--out", str(tmp_path / "run"), "--steps", "1", "--backbone", str(path)]
        assert main(args + CLI_TINY) == 2
        err = cli_error(capsys)
        assert "backbone: " in err and message in err, err
        assert str(path) in err
    absent = tmp_path / "absent.safetensors"
    with pytest.raises(ValueError, match=f"init_from: weights: no such file {absent}"):
        train(tiny_run(tmp_path / "run2", steps=1, init_from=str(absent)), TINY)
