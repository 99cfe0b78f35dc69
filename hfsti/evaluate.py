"""Evaluation: stream a checkpoint over a SUN-SEG-layout root and score it.

The metrics are those of docs/model.md, Metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hfsti.data import list_cases, load_frame, load_mask, write_mask
from hfsti.data.atomic import write_atomic
from hfsti.metrics import METRIC_KEYS, CaseMetrics
from hfsti.model import HFSTINet
from hfsti.segment import frame_to_tensor, probability_map
from hfsti.stream import VideoSegmenter


def evaluate_model(
    model: HFSTINet,
    root: str | Path,
    cases: list[str] | None = None,
    save_predictions: str | Path | None = None,
    progress: bool = True,
    drop_ends: bool = False,
) -> dict:
    """Segment every case of ``root`` (memory reset per case) and score it against its GT.

    Predictions are scored as probabilities at the GT's resolution; with
    ``save_predictions`` they are also written as ``<dir>/<case>/<frame>.png`` (8-bit), the
    layout ``score_folders`` reads. ``drop_ends=True`` leaves the first and last frame of each
    case unscored (the toolbox protocol; they still run, to fill the memory). Returns
    ``{"overall": {...}, "cases": {...}}``.
    """
    pairs = list_cases(root)
    if cases is not None:
        unknown = sorted(set(cases) - set(pairs))
        if unknown:
            empty = [c for c in unknown if (Path(root) / "Frame" / c).is_dir()]
            why = f" ({', '.join(empty)}: no frames)" if empty else ""
            raise ValueError(
                f"cases: {unknown} not in {root}{why} (cases with frames: {sorted(pairs)})"
            )
        pairs = {c: pairs[c] for c in cases}
    device, size = model.mean.device, model.config.input_size
    segmenter = VideoSegmenter(model.eval())
    metrics = CaseMetrics(drop_ends=drop_ends)
    total = sum(len(p) for p in pairs.values())
    with tqdm(total=total, desc="eval", unit="frame", disable=not progress) as bar:
        for case, frames in pairs.items():
            segmenter.reset()
            for frame_path, mask_path in frames:
                gt = load_mask(mask_path)
                logits = segmenter.step(frame_to_tensor(load_frame(frame_path), size, device))
                prob = probability_map(logits, gt.shape)
                if save_predictions is not None:
                    write_mask(Path(save_predictions) / case / f"{frame_path.stem}.png", prob)
                metrics.add(case, prob, gt)
                bar.update()
    return metrics.results()


def format_table(results: dict) -> str:
    """Per-case rows and the overall row, one column per metric."""
    width = max(8, *(len(c) for c in results["cases"]))
    lines = [f"{'case':<{width}} " + " ".join(f"{k:>9}" for k in METRIC_KEYS)]
    rows = [*results["cases"].items(), ("overall", results["overall"])]
    for name, values in rows:
        lines.append(f"{name:<{width}} " + " ".join(f"{values[k]:>9.4f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def write_json(results: dict, path: str | Path) -> None:
    """``{"overall": {metric: value}, "cases": {case: {metric: value}}}``, plain floats."""

    def clean(values: dict) -> dict:
        return {k: float(np.float64(values[k])) for k in METRIC_KEYS}

    data = {
        "overall": clean(results["overall"]),
        "cases": {c: clean(v) for c, v in results["cases"].items()},
    }
    text = (json.dumps(data, indent=2) + "\n").encode()
    write_atomic(path, lambda f: f.write(text))  # ValueError naming path when it cannot
