"""The fast inference path: a fused, reduced-precision, CUDA-graphed streaming segmenter.

``accelerate(model)`` returns an :class:`AcceleratedSegmenter` with the interface of
:class:`hfsti.VideoSegmenter` (``step(frame) -> level-1 logits``, ``reset()``, ``memory``). It
never touches the caller's model: it works on a deep copy that is switched to the fused ops
(``hfsti_kernels.patch(copy, backend)``: ``"auto"``, the Triton kernels on CUDA, by default;
``"cuda"`` for the hand-written CUDA kernels of ``csrc/``), put in eval mode with autograd off,
has its BatchNorms folded away and is cast to ``dtype``.

Precision policy (``dtype`` = bfloat16 or float16; float32 runs the same path in fp32):

- float32: BatchNorm folding (the scale and shift are computed in float64 from the fp32 running
  statistics, folded into the preceding conv, then cast to ``dtype``); the ImageNet
  normalisation of the input; the level-1 head (the 1x1 conv to one channel), the bilinear
  upsampling of the logits to the frame, the sigmoid and the area-downsampling of the mask that
  enters the memory. The returned logits are float32.
- fp32 *statistics*, ``dtype`` storage: LayerNorm (PyTorch's layer_norm accumulates mean and
  variance of half-precision inputs in fp32) and every softmax (PyTorch's softmax and the fused
  memory-attention kernel keep the running max and sum in fp32); the fused FFT ops transform in
  fp32. Matmuls and convs accumulate in fp32 on the tensor cores.
- ``dtype``: everything else, weights, activations and the memory bank (features and masks,
  as the reference's ``Memory.push`` stores the mask in the features' dtype).

The step is built from the model's own pieces (``HFSTINet.encode``, ``HFSTINet.level4``,
``Decoder.decode``), but only the level-1 prediction gets a head (the deep-supervision heads 2-4
are training-only), so it does less work than ``HFSTINet.step`` and returns exactly its
``logits[:, :1]``.

Memory bank and CUDA graphs. Shapes are static: a fixed ``batch_size`` (a batch means
independent videos, all reset together) and a fixed model resolution ``size``. The bank is two
preallocated tensors, features (B, T_m, C, h, w) and masks (B, T_m, 1, h, w), used as a shift
buffer: the ``k`` remembered frames sit in the last ``k`` slots, oldest first, as in
:class:`hfsti.Memory`. A host-side frame counter gives ``k = min(frames seen, T_m)``. There is
one step per ``k`` in 0..T_m, each a static computation that reads the views
``bank[:, T_m-k:]`` and ends by shifting the valid slots left by one and writing this frame's
(M, mask) into the last slot, in place. ``k = 0`` is the first frame of a video: its memory is
its own M with an all-zero mask (docs/model.md, Empty memory), built inside the step, and the
bank is not read. On CUDA with ``cuda_graphs=True`` each of the T_m + 1 steps (encode, RMP,
decoder and memory update) is captured in its own ``torch.cuda.CUDAGraph`` (all sharing one
memory pool, after a warm-up on a side stream), and ``step`` copies the frame into the static
input, replays graph ``k`` and returns a copy of the static output. Replay runs the same kernels
on the same buffers as the eager path, so the two agree; the eager path is what runs on CPU or
with ``cuda_graphs=False``.

Frames whose size differs from ``size`` are resized to it (bilinear, antialiased, as
``hfsti.segment`` does) and the logits resized back to the frame's size, bilinearly; the memory
grid is the one of ``size``. ``cuda_graphs=True`` with a CPU model is not an error: graphs are a
CUDA feature, so the segmenter runs eagerly (``segmenter.graphed`` says which path runs).

Backends. Either kernel backend can be captured: the CUDA backend's launches go to torch's
current stream without synchronising or allocating (its op modules allocate through torch, from
the graphs' pool), and the warm-up does the one-time work outside the capture (CuPy's NVRTC
compile, the opt-in to large shared memory). On a CPU model ``backend="cuda"`` runs the same
eager path in the host emulator (``HFSTI_CUDA_EMULATE=1``), which is how CI checks it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from hfsti._checks import FLOAT_DTYPES, check_tensor
from hfsti.model import HFSTINet, Memory
from hfsti.model.net import IMAGENET_MEAN, IMAGENET_STD
from hfsti.model.rmp import mask_to_grid
from hfsti_kernels._backend import check_backend, require_cuda
from hfsti_kernels.patch import patch

__all__ = ["AcceleratedSegmenter", "accelerate", "fold_batchnorms", "DTYPES"]

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_WARMUP_STEPS = 3


def fold_batchnorms(module: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` inside an
    ``nn.Sequential`` (the neck's ConvBNReLU) into that conv, in place; returns how many.

    The conv gets ``W * s`` and bias ``(b - mu) * s + beta`` with ``s = gamma / sqrt(var + eps)``,
    computed in float64 and stored in the conv's dtype; the BatchNorm becomes ``nn.Identity``.
    """
    folded = 0
    for child in module.children():
        if isinstance(child, nn.Sequential):
            for i in range(len(child) - 1):
                conv, bn = child[i], child[i + 1]
                if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                    continue
                if bn.running_mean is None or bn.running_var is None:
                    continue  # batch statistics only: nothing static to fold
                with torch.no_grad():
                    w = conv.weight.double()
                    gamma = bn.weight.double() if bn.weight is not None else 1.0
                    beta = bn.bias.double() if bn.bias is not None else 0.0
                    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
                    bias = conv.bias.double() if conv.bias is not None else 0.0
                    bias = (bias - bn.running_mean.double()) * scale + beta
                    dtype = conv.weight.dtype
                    conv.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(dtype))
                    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
                child[i + 1] = nn.Identity()
                folded += 1
        folded += fold_batchnorms(child)
    return folded


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in pair):
        raise ValueError(f"size: expected an int or a pair of ints (H, W), got {size!r}")
    if min(pair) < 32:
        raise ValueError(f"size: expected H, W >= 32, got {pair}")
    return pair


class AcceleratedSegmenter:
    """Streaming segmentation with the fused model in reduced precision (see the module notes).

    Built by ``accelerate(model, ...)`` (this class under its entry-point name), which leaves
    ``model`` untouched. ``step(frame)`` takes (batch_size, 3, H, W) RGB in [0, 1] (any float
    dtype, any device: it is copied into the static input) and returns float32 level-1 logits
    (batch_size, 1, H, W) on the model's device; ``reset()`` starts new videos, as
    :class:`hfsti.VideoSegmenter`.

    Args:
        model: an ``HFSTINet`` (any backend, device, dtype or mode; its device is used).
        dtype: torch.bfloat16 (default), torch.float16 or torch.float32 (the same path in fp32,
            for testing).
        cuda_graphs: capture each step in a CUDA graph when the model is on CUDA; ignored (eager)
            on CPU.
        batch_size: the number of independent videos each ``step`` takes (static).
        size: the model resolution, an int or (H, W) (default ``model.config.input_size``);
            frames of another size are resized to it and their logits resized back.
        backend: the kernels of the fused copy: "auto" (Triton on CUDA), "triton", "cuda" (the
            CUDA backend; on a CPU model under ``HFSTI_CUDA_EMULATE=1``) or "reference"; a
            backend that cannot run here raises a one-line ValueError naming ``backend``.

    Attributes:
        model: the fused, folded, cast private copy of the model.
        dtype: the compute dtype; batch_size, size: the static shapes.
        backend: the fused copy's kernels ("auto", "triton", "cuda" or "reference").
        graphed: True when steps replay CUDA graphs, False when they run eagerly.
    """

    def __init__(
        self,
        model: HFSTINet,
        dtype: torch.dtype = torch.bfloat16,
        cuda_graphs: bool = True,
        batch_size: int = 1,
        size: int | tuple[int, int] | None = None,
        backend: str = "auto",
    ) -> None:
        if not isinstance(model, HFSTINet):
            raise TypeError(f"model: expected an HFSTINet, got {type(model).__name__}")
        if dtype not in DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in DTYPES)
            raise ValueError(f"dtype: expected one of ({names}), got {dtype!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.size = _as_size(model.config.input_size if size is None else size)
        self.backend = check_backend(backend)
        if backend == "cuda":
            require_cuda(model.mean)  # an executor for the model's device, not just any
        self.dtype = dtype
        self.batch_size = batch_size
        device = model.mean.device
        self.device = device

        net = copy.deepcopy(model).float().eval().requires_grad_(False)
        patch(net, backend)
        fold_batchnorms(net)
        head = net.decoder.heads[0]  # kept in fp32: it makes the returned logits
        self._head_weight = head.weight.detach().float().clone()
        self._head_bias = head.bias.detach().float().clone()
        self.model = net.to(dtype)
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

        # Static buffers: the input, the output and the memory bank.
        H, W = self.size
        grid = self._grid(H, W)
        C, T = net.config.channels, net.config.memory_frames
        self.memory_frames = T
        self._frame = torch.zeros(batch_size, 3, H, W, device=device)
        self._logits = torch.zeros(batch_size, 1, H, W, device=device)
        self._features = torch.zeros(batch_size, T, C, *grid, device=device, dtype=dtype)
        self._masks = torch.zeros(batch_size, T, 1, *grid, device=device, dtype=dtype)
        self._seen = 0

        self.graphed = bool(cuda_graphs) and device.type == "cuda"
        self._graphs: list[torch.cuda.CUDAGraph] = []
        if self.graphed:
            self._capture()

    # ----------------------------------------------------------------- public

    def reset(self) -> None:
        """Forget the memory: the next frame starts new videos (all ``batch_size`` of them)."""
        self._seen = 0
        self._features.zero_()
        self._masks.zero_()

    @property
    def memory(self) -> Memory | None:
        """A copy of the remembered frames (oldest first), None before the first frame."""
        k = min(self._seen, self.memory_frames)
        if k == 0:
            return None
        T = self.memory_frames
        return Memory(self._features[:, T - k :].clone(), self._masks[:, T - k :].clone())

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """frame (batch_size, 3, H, W) RGB in [0, 1] -> float32 level-1 logits (B, 1, H, W)."""
        self._check_frame(frame)
        size = tuple(frame.shape[-2:])
        with torch.no_grad():
            if size != self.size:
                frame = F.interpolate(
                    frame.float(), size=self.size, mode="bilinear", antialias=True
                )
            self._frame.copy_(frame)
            k = min(self._seen, self.memory_frames)
            if self.graphed:
                self._graphs[k].replay()
            else:
                self._run(k)
            self._seen += 1
            logits = self._logits.clone()
            if size != self.size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    __call__ = step

    def __repr__(self) -> str:
        return (
            f"AcceleratedSegmenter(dtype={self.dtype}, backend={self.backend!r}, "
            f"batch_size={self.batch_size}, size={self.size}, "
            f"memory_frames={self.memory_frames}, graphed={self.graphed}, device={self.device})"
        )

    # ----------------------------------------------------------------- internals

    def _check_frame(self, frame: torch.Tensor) -> None:
        check_tensor("frame", frame, ndim=4, dtypes=FLOAT_DTYPES)
        batch, channels, H, W = frame.shape
        if channels != 3:
            raise ValueError(f"frame: expected 3 (RGB) channels, got shape {tuple(frame.shape)}")
        if batch != self.batch_size:
            how = "the captured CUDA graphs" if self.graphed else "the memory bank"
            raise ValueError(
                f"frame: expected batch size {self.batch_size} ({how} are built for it; "
                f"use accelerate(..., batch_size={batch}) for batches of {batch}), got {batch}"
            )
        if min(H, W) < 1:
            raise ValueError(f"frame: expected a non-empty frame, got shape {tuple(frame.shape)}")

    def _grid(self, H: int, W: int) -> tuple[int, int]:
        """The F4 grid of a (H, W) input: PVTv2's patch embeddings, 7x7/s4 then three 3x3/s2,
        each with padding k // 2."""
        for k, s in ((7, 4), (3, 2), (3, 2), (3, 2)):
            H = (H + 2 * (k // 2) - k) // s + 1
            W = (W + 2 * (k // 2) - k) // s + 1
        return H, W

    def _run(self, k: int) -> None:
        """One frame with ``k`` remembered frames: static input -> static logits, bank in place."""
        net, T = self.model, self.memory_frames
        x = ((self._frame - self._mean) / self._std).to(self.dtype)
        chis, m = net.encode(x, normalized=True)
        # k = 0, the first frame: level4 reads its own M with an all-zero mask.
        memory = Memory(self._features[:, T - k :], self._masks[:, T - k :]) if k else None
        d1 = net.decoder.decode([*chis, net.level4(m, memory)])[0]  # level 1 only gets a head
        logits = F.conv2d(d1.float(), self._head_weight, self._head_bias)
        logits = F.interpolate(logits, size=self.size, mode="bilinear", align_corners=False)
        self._logits.copy_(logits)
        prob = mask_to_grid(torch.sigmoid(logits), m.shape[-2:]).to(self.dtype)
        # Push: shift the remembered frames one slot older (dropping the oldest when full) ...
        if k > 0:
            keep = min(k, T - 1)
            if keep:
                self._features[:, T - 1 - keep : T - 1].copy_(self._features[:, T - keep :].clone())
                self._masks[:, T - 1 - keep : T - 1].copy_(self._masks[:, T - keep :].clone())
        # ... and write this frame into the newest slot.
        self._features[:, T - 1].copy_(m)
        self._masks[:, T - 1].copy_(prob)

    def _capture(self) -> None:
        """Warm up every step on a side stream (Triton or NVRTC compiles, cuBLAS sets up,
        shared-memory opt-ins), then capture one graph per fill level k = 0..T_m, sharing a
        memory pool; finally clear the bank."""
        levels = range(self.memory_frames + 1)
        with torch.no_grad():
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(_WARMUP_STEPS):
                    for k in levels:
                        self._run(k)
            torch.cuda.current_stream(self.device).wait_stream(side)
            pool = None
            for k in levels:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self._run(k)
                pool = graph.pool()
                self._graphs.append(graph)
        torch.cuda.synchronize(self.device)
        self.reset()


# The documented entry point: ``accelerate(model, ...)`` builds an AcceleratedSegmenter.
accelerate = AcceleratedSegmenter
