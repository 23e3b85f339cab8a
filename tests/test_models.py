"""Model resolution works offline; devices and precisions resolve as DESIGN.md says."""

from __future__ import annotations

import json

import pytest

from msmarco_ft import models
from msmarco_ft.errors import InputError


def test_default_name_resolves_to_bundled_copy_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.hub_reachable.cache_clear()
    path = models.resolve_model(models.DEFAULT_MODEL)
    assert path == str(models.bundled_model_path())
    assert (models.bundled_model_path() / "model.safetensors").exists()
    models.hub_reachable.cache_clear()


def test_local_folder_and_bad_folder(tmp_path, tiny_model):
    assert models.resolve_model(str(tiny_model)) == str(tiny_model)
    with pytest.raises(InputError, match="is not a model folder"):
        models.resolve_model(str(tmp_path))


def test_cpu_device_and_precision():
    assert models.resolve_device("cpu") == "cpu"
    assert models.resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(InputError, match="fp16 is not supported on CPU"):
        models.resolve_precision("fp16", "cpu")


def test_tiny_model_keeps_normalize_and_fingerprint_tracks_weights(tiny_model):
    import torch

    model = models.load_model(str(tiny_model), device="cpu")
    assert type(model[-1]).__name__ == "Normalize"
    before = models.model_fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert models.model_fingerprint(model) != before


def test_lora_adapter_loads_and_merges(tmp_path, tiny_model):
    import numpy as np
    from peft import LoraConfig

    model = models.load_model(str(tiny_model), device="cpu")
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    model.save(str(adapter_dir))
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    texts = ["what colour is the sky", "a passage about rivers"]
    unmerged = models.load_model(str(adapter_dir), device="cpu")
    assert models.has_adapter(unmerged)
    merged = models.load_model(str(adapter_dir), device="cpu", merge_adapter=True)
    assert not models.has_adapter(merged)
    assert np.abs(unmerged.encode(texts) - merged.encode(texts)).max() < 1e-5
    base = models.load_model(str(tiny_model), device="cpu")
    assert np.abs(base.encode(texts) - merged.encode(texts)).max() > 1e-4


def test_model_label_is_file_safe():
    assert models.model_label("sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
