"""Shared fixtures: a tiny random BERT with the real tokenizer, and tiny MS MARCO-layout files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide random BERT with the real tokenizer, mean pooling and Normalize."""
    from msmarco_ft.models import build_random_model

    out = build_random_model(folder, hidden=32, layers=2, heads=2, seed=seed)
    return out.rename(folder / "tiny-model")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path
