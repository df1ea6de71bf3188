"""Exporting a trained network as a model store (the file contract in model_store/README.md)."""

from .store import write_model_store

__all__ = ["write_model_store"]
