"""Synthetic ASMD / FTD: rendered ICT faces with exact ground truth."""

from .expressions import CATEGORIES, RECIPES, sample_expressions
from .generator import SynthBatch, SynthFaceGenerator, SynthSettings, uv_visibility

__all__ = ["CATEGORIES", "RECIPES", "sample_expressions", "SynthBatch", "SynthFaceGenerator", "SynthSettings", "uv_visibility"]
