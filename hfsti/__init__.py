"""HFSTI-Net for video polyp segmentation: the pure-PyTorch reference system."""

from hfsti import ops
from hfsti.checkpoint import load_checkpoint, save_checkpoint
from hfsti.losses import HybridLoss
from hfsti.model import HFSTIConfig, HFSTINet, Memory
from hfsti.stream import VideoSegmenter

__version__ = "0.1.0"

__all__ = [
    "HFSTIConfig",
    "HFSTINet",
    "HybridLoss",
    "Memory",
    "VideoSegmenter",
    "load_checkpoint",
    "ops",
    "save_checkpoint",
]
