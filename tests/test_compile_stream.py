"""torch.compile and the streaming step: a compiled model is accepted, the step compiles once per
memory fill level (no stride-driven recompiles), and a stream refuses a change of frame size.

Compiles use a counting backend that runs the captured graph eagerly, so they stay fast on CPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hfsti import HFSTIConfig, HFSTINet, VideoSegmenter
from hfsti.model import Memory

SMALL = HFSTIConfig(channels=16, rmp_heads=2)


def make_model(memory_frames=1):
    torch.manual_seed(0)
    return HFSTINet(dataclasses.replace(SMALL, memory_frames=memory_frames)).eval()


def frames(n, H=64, W=64, seed=0):
    return torch.rand(n, 1, 3, H, W, generator=torch.Generator().manual_seed(seed)).unbind(0)


class CountingBackend:
    """A torch.compile backend that records each graph it is given and runs it as captured."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        return gm.forward


def test_a_compiled_model_is_accepted_and_agrees_with_eager():
    model = make_model()
    clip = frames(3)
    eager = VideoSegmenter(model)
    expected = [eager.step(f) for f in clip]
    torch._dynamo.reset()
    compiled = VideoSegmenter(torch.compile(model), compile={"backend": "eager"})
    assert compiled.model is model and compiled.compiled
    for f, want in zip(clip, expected):
        torch.testing.assert_close(compiled.step(f), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("memory_frames", [1, 2])
def test_step_compiles_once_per_memory_fill_level(memory_frames):
    backend = CountingBackend()
    torch._dynamo.reset()
    segmenter = VideoSegmenter(
        make_model(memory_frames), compile={"backend": backend, "fullgraph": True}
    )
    counts = []
    for video in range(2):  # a second video of the same size compiles nothing new
        segmenter.reset()
        for f in frames(memory_frames + 3, seed=video):
            segmenter.step(f)
            counts.append(backend.graphs)
    levels = memory_frames + 1  # first frame, then 1 .. memory_frames remembered frames
    assert counts[levels - 1] == levels, counts
    assert counts[-1] == levels, counts  # nothing after the bank is full


@pytest.mark.parametrize("memory_frames", [1, 3])
def test_memory_bank_is_contiguous_at_every_fill_level(memory_frames):
    model = make_model(memory_frames)
    memory = None
    with torch.inference_mode():
        for t, f in enumerate(frames(memory_frames + 2)):
            _, memory = model.step(f, memory)
            assert memory.features.shape[1] == min(t + 1, memory_frames)
            for name, x in zip(Memory._fields, memory):
                assert x.is_contiguous() and x.stride() == torch.empty(x.shape).stride(), name


def test_compile_option_is_checked():
    with pytest.raises(TypeError, match="compile: expected a bool or a dict"):
        VideoSegmenter(make_model(), compile="yes")
    with pytest.raises(TypeError, match="model: expected an HFSTINet, got OptimizedModule"):
        VideoSegmenter(torch.compile(torch.nn.Linear(2, 2)))


def test_frame_size_change_mid_stream_is_an_error_until_reset():
    model = make_model()
    segmenter = VideoSegmenter(model)
    segmenter.step(frames(1)[0])
    with pytest.raises(ValueError, match=r"frame: size \(64, 96\) differs from this video's"):
        segmenter.step(frames(1, W=96)[0])
    segmenter.reset()
    assert segmenter.step(frames(1, W=96)[0]).shape == (1, 1, 64, 96)
    # The model itself refuses a memory of another grid, naming it.
    _, memory = model.step(frames(1)[0])
    with pytest.raises(ValueError, match=r"memory: holds a \(2, 2\) feature grid"):
        model.step(frames(1, H=96, W=96)[0], memory)
