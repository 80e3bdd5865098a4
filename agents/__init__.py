"""Agents for Glimpse-v0: the Saccader (network and SB3 policies), features extractors and
evaluation helpers."""

from agents.saccader import Saccader
from agents.sb3_saccader import MaskableSaccaderPolicy, SaccaderPolicy, load_saccader_weights

__all__ = ["MaskableSaccaderPolicy", "Saccader", "SaccaderPolicy", "load_saccader_weights"]
