"""The reference HFSTI-Net and its parts."""

from hfsti.model.net import HFSTIConfig, HFSTINet
from hfsti.model.rmp import Memory

__all__ = ["HFSTIConfig", "HFSTINet", "Memory"]
