"""Timing loops, percentile statistics and the hardware record behind the latency scripts.

Each figure holds only the work it names (loading, query encoding, search over passage embeddings, or
encode plus search) and is taken after warm-up calls, between two device synchronisations on a GPU.
Several models measured in one run take turns part by part, in an order rotated every repeat, so drift
of a shared machine (other jobs, clock changes) falls on all of them alike, not on whichever came last.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cli
from .errors import InputError
from .formats import iter_table, read_table
from .models import load_model

log = logging.getLogger(__name__)
SCHEMA = "msmarco-ft/latency/1"
DEFAULT_BATCH_SIZES = "1,8,32,128"


# ---------------------------------------------------------------- statistics


def summarize(seconds, items: int) -> dict[str, float]:
    """Latency percentiles of timed calls (numpy's linear interpolation) and throughput of ``items`` in all."""
    times = np.asarray(seconds, dtype=np.float64)
    if times.size == 0:
        raise ValueError("no timings to summarize")
    p50, p95, p99 = np.percentile(times, [50, 95, 99]) * 1000.0
    total = float(times.sum())
    return {"n": int(times.size), "p50_ms": _r(p50), "p95_ms": _r(p95), "p99_ms": _r(p99),
            "mean_ms": _r(times.mean() * 1000.0), "min_ms": _r(times.min() * 1000.0),
            "max_ms": _r(times.max() * 1000.0), "qps": _r(items / total if total > 0 else float("inf"))}


def _r(value) -> float:
    return round(float(value), 4)


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(None, f"--batch-sizes {text!r}: expected comma-separated integers such as 1,8,32") from None
    if not sizes or min(sizes) < 1:
        raise InputError(None, f"--batch-sizes {text!r}: every batch size must be at least 1")
    return sorted(set(sizes))


# ---------------------------------------------------------------- timing


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    """Run ``fn`` once; the time spans only its own device work, not what was queued before it."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def cycled_batches(items: list, batch_size: int) -> list[list]:
    """Enough full batches to pass over every item once; the last is topped up from the start.

    Every timed call then holds exactly ``batch_size`` items, so a percentile is not skewed by one short
    batch, and a batch larger than the query set still measures that batch size.
    """
    count = max(1, -(-len(items) // batch_size))
    return [[items[(b * batch_size + j) % len(items)] for j in range(batch_size)] for b in range(count)]


def measure_load(name: str, device: str, precision: str, merge_adapter: bool = False):
    """Load time of a model whose files are already in the page cache (first load untimed)."""
    warm = load_model(name, device, precision, merge_adapter=merge_adapter)
    del warm
    gc.collect()
    model, seconds = timed(lambda: load_model(name, device, precision, merge_adapter=merge_adapter), device)
    return model, seconds


# ---------------------------------------------------------------- hardware


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def backend_versions() -> dict[str, str]:
    found = cli.versions()
    for name in ("onnxruntime", "optimum"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def hardware_info(device: str) -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "device": device,
        "gpu": None,
    }
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    info["versions"] = backend_versions()
    return info


def onnx_missing() -> str | None:
    """Why sentence-transformers' ONNX backend cannot run here, or None when it can."""
    for module in ("onnxruntime", "optimum"):
        if importlib.util.find_spec(module) is None:
            return (f"onnx backend skipped: {module} is not installed "
                    "(pip install 'sentence-transformers[onnx]' to measure it)")
    return None


def measure_onnx(name: str, work: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """The same workload through sentence-transformers' ONNX backend (exported on first load, untimed)."""
    from sentence_transformers import SentenceTransformer

    from .models import resolve_model

    path = resolve_model(name)
    SentenceTransformer(path, device=work.device, backend="onnx")
    model, load_s = timed(lambda: SentenceTransformer(path, device=work.device, backend="onnx"), work.device)
    figures = measure_models({"onnx": model}, work, args.repeats, args.warmup)["onnx"]
    return {"backend": "onnx", "load_s": _r(load_s), **figures}


# ---------------------------------------------------------------- workload


@dataclass
class PassageIndex:
    """Passage embeddings held where the search runs (a tensor on the device), with their pids."""

    embeddings: Any
    pids: np.ndarray
    source: str

    @property
    def size(self) -> int:
        return int(self.pids.shape[0])


@dataclass
class Workload:
    queries: list[str]
    batch_sizes: list[int]
    passages: list[str]
    passage_batch_size: int
    top_k: int
    device: str
    index: PassageIndex | None = None
    rounds: list[list[str]] = field(default_factory=list)


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    """The flags both latency scripts share (the original ones first)."""
    parser.add_argument("--filtered-queries", "--queries", dest="queries", required=True,
                        help="queries file (qid, text), TSV or Parquet; the first --num-queries are timed")
    parser.add_argument("--collection", required=True, help="collection file (pid, text), TSV or Parquet")
    parser.add_argument("--batch-sizes", default=DEFAULT_BATCH_SIZES,
                        help="query batch sizes to time (comma-separated); also the query block sizes of search")
    parser.add_argument("--num-queries", type=int, default=1000, help="queries timed per pass")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per measurement before timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the queries")
    parser.add_argument("--top-k", type=int, default=100, help="passages returned per query by the search")
    parser.add_argument("--max-passages", type=int, default=None,
                        help="search over the embeddings of only the first N passages, encoded here; "
                             "default: the whole collection from the embedding cache (built when missing)")
    parser.add_argument("--cache-dir", default="cache",
                        help="embedding cache folder shared with eval_model.py and process_train_queries.py; "
                             "'none' disables it (then --max-passages is needed)")
    parser.add_argument("--chunk-size", type=int, default=200_000,
                        help="passages per cache chunk: the value eval_model.py used, so its cache is found")
    parser.add_argument("--throughput-passages", type=int, default=1000,
                        help="passages encoded per pass to measure collection encoding throughput")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size for passage encoding")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 keeps per-query latency steady on a CPU "
                             "shared with other jobs, where multi-threaded small ops wait for a busy core")
    cli.add_device_args(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def setup_run(args: argparse.Namespace) -> list[int]:
    """Check the shared flags, apply --threads, and return the batch sizes."""
    for flag in ("num_queries", "repeats", "top_k", "throughput_passages", "batch_size", "chunk_size"):
        if getattr(args, flag) < 1:
            raise InputError(None, f"--{flag.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.threads < 0:
        raise InputError(None, "--warmup and --threads must be 0 or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_passages is not None and args.max_passages < 1:
        raise InputError(None, "--max-passages must be at least 1")
    if str(args.cache_dir).lower() in ("", "none"):
        args.cache_dir = None
    if args.max_passages is None and args.cache_dir is None:
        raise InputError(None, "without --cache-dir the whole collection cannot be searched; pass --max-passages")
    return parse_batch_sizes(args.batch_sizes)


def read_passages(collection, count: int) -> tuple[np.ndarray, list[str]]:
    """The first ``count`` passages, streamed so a multi-GB collection is not read whole."""
    pids, texts = [], []
    for frame in iter_table(collection, "collection", chunk_rows=min(count, 200_000)):
        take = count - len(pids)
        pids.extend(frame["pid"].to_numpy()[:take].tolist())
        texts.extend(frame["text"].tolist()[:take])
        if len(pids) >= count:
            break
    return np.asarray(pids, dtype=np.int64), texts


def build_workload(args: argparse.Namespace, batch_sizes: list[int], device: str) -> Workload:
    queries = read_table(args.queries, "queries")
    texts = queries["text"].tolist()[: args.num_queries]
    if len(texts) < args.num_queries:
        log.info("%s holds %d queries (fewer than --num-queries %d)", args.queries, len(texts), args.num_queries)
    _, passages = read_passages(args.collection, args.throughput_passages)
    return Workload(queries=texts, batch_sizes=batch_sizes, passages=passages,
                    passage_batch_size=args.batch_size, top_k=args.top_k, device=device)


def build_index(model, args: argparse.Namespace, device: str) -> PassageIndex:
    """Passage embeddings to search: a slice encoded here, or the whole collection from the cache."""
    from .search import encode_texts

    if args.max_passages is not None:
        pids, texts = read_passages(args.collection, args.max_passages)
        log.info("encoding the first %d passages for the search index", len(texts))
        embeddings = encode_texts(model, texts, batch_size=args.batch_size, progress=True)
        return PassageIndex(_to_device(embeddings, device), pids, source=f"first {len(pids)} passages")
    embeddings, pids = cached_collection(model, args)
    return PassageIndex(_to_device(embeddings, device), pids, source=f"cache {args.cache_dir}")


def cached_collection(model, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The whole collection's embeddings from the cache that eval_model.py fills (filled here when missing)."""
    from .search import EmbeddingCache, search_collection

    def open_cache() -> EmbeddingCache:
        return EmbeddingCache.for_model(args.cache_dir, model, args.collection, args.chunk_size)

    cache = open_cache()
    if cache.total_chunks is None:
        log.info("no complete embedding cache in %s for this model: encoding the collection once", args.cache_dir)
        queries = read_table(args.queries, "queries").head(1)
        search_collection(model, queries, args.collection, top_k=args.top_k, chunk_size=args.chunk_size,
                          cache_dir=args.cache_dir, progress=True)
        cache = open_cache()
    chunks = [cache.load(index) for index in range(cache.total_chunks)]
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def _to_device(embeddings: np.ndarray, device: str):
    tensor = torch.from_numpy(np.ascontiguousarray(embeddings))
    if str(device).startswith("cuda"):
        # Half precision on the GPU, as the search engine stores it: half the memory traffic per query.
        return tensor.to(device=device, dtype=torch.float16)
    return tensor


# ---------------------------------------------------------------- measurements


def _encode(model, texts: list[str]) -> np.ndarray:
    from .search import encode_texts

    return encode_texts(model, texts, batch_size=len(texts))


def _search(query_emb, index: PassageIndex, top_k: int, device: str):
    from .search import exact_topk

    return exact_topk(query_emb, index.embeddings, index.pids, top_k, device=device)


def warm_up(model, work: Workload, calls: int) -> None:
    """``calls`` untimed calls of each query shape; the passage batch once (it is seconds long on a CPU)."""
    for _ in range(calls):
        for size in work.batch_sizes:
            _encode(model, cycled_batches(work.queries, size)[0])
        if work.index is not None:
            _search(_encode(model, work.queries[:1]), work.index, work.top_k, work.device)
    if calls:
        _encode(model, work.passages[: work.passage_batch_size])


def _time_encode(model, work: Workload, samples: dict, size: int) -> None:
    for batch in cycled_batches(work.queries, size):
        samples["encode"][size].append(timed(lambda b=batch: _encode(model, b), work.device)[1])


def _time_end_to_end(model, work: Workload, samples: dict) -> None:
    for text in work.queries:
        query_emb, encode_s = timed(lambda t=text: _encode(model, [t]), work.device)
        search_s = timed(lambda q=query_emb: _search(q, work.index, work.top_k, work.device), work.device)[1]
        samples["e2e_encode"].append(encode_s)
        samples["e2e_search"].append(search_s)


def _time_passages(model, work: Workload, samples: dict) -> None:
    for start in range(0, len(work.passages), work.passage_batch_size):
        batch = work.passages[start:start + work.passage_batch_size]
        samples["passages_s"] += timed(lambda b=batch: _encode(model, b), work.device)[1]
    samples["passages_n"] += len(work.passages)


def _parts(work: Workload) -> list[Callable]:
    """One timed pass, split so several models can take turns part by part (about a second each)."""
    parts = [lambda m, s, size=size: _time_encode(m, work, s, size) for size in work.batch_sizes]
    if work.index is not None:
        parts.append(lambda m, s: _time_end_to_end(m, work, s))
    parts.append(lambda m, s: _time_passages(m, work, s))
    return parts


def measure_models(models: dict[str, Any], work: Workload, repeats: int, warmup: int) -> dict[str, dict]:
    """Time every model on the same workload.

    The models take turns on each part of a pass (a batch size, the end-to-end queries, the passages),
    in an order rotated every repeat, so drift of a shared machine falls on all of them alike.
    """
    names = list(models)
    samples = {name: {"encode": {size: [] for size in work.batch_sizes}, "e2e_encode": [], "e2e_search": [],
                      "passages_s": 0.0, "passages_n": 0} for name in names}
    for name in names:
        warm_up(models[name], work, warmup)
    log.info("timing %s: %d repeat(s) of %d queries", ", ".join(names), repeats, len(work.queries))
    for repeat in range(repeats):
        shift = repeat % len(names)
        order = names[shift:] + names[:shift]
        work.rounds.append(order)
        for part in _parts(work):
            for name in order:
                part(models[name], samples[name])
    return {name: _figures(samples[name], work) for name in names}


def _figures(samples: dict, work: Workload) -> dict[str, Any]:
    encode = {}
    for size, times in samples["encode"].items():
        encode[str(size)] = summarize(times, items=len(times) * size)
    figures: dict[str, Any] = {"encode": encode}
    if samples["e2e_encode"]:
        enc = np.asarray(samples["e2e_encode"])
        sea = np.asarray(samples["e2e_search"])
        total = enc + sea
        figures["end_to_end"] = {**summarize(total, items=total.size),
                                 "encode_mean_ms": _r(enc.mean() * 1000), "search_mean_ms": _r(sea.mean() * 1000),
                                 "encode_share": _r(enc.sum() / total.sum()),
                                 "search_share": _r(sea.sum() / total.sum())}
    figures["passages_per_s"] = _r(samples["passages_n"] / samples["passages_s"])
    figures["collection_encode"] = {"passages": samples["passages_n"], "seconds": _r(samples["passages_s"]),
                                    "batch_size": work.passage_batch_size}
    return figures


def measure_search(model, work: Workload, repeats: int, warmup: int) -> dict[str, Any]:
    """Search latency per query block over the index, beside the bare matmul of the same shape.

    The matmul (query block times all passage embeddings, no top-k) is the arithmetic floor of exact
    search; ``matmul_ratio`` is floor / search time, so 1.0 means the top-k selection costs nothing.
    """
    index, device = work.index, work.device
    query_emb = np.concatenate([_encode(model, batch) for batch in cycled_batches(work.queries, 128)])
    query_emb = query_emb[: len(work.queries)]
    blocks = {}
    for size in work.batch_sizes:
        batches = cycled_batches(list(range(len(query_emb))), size)
        for _ in range(warmup):
            _search(query_emb[batches[0]], index, work.top_k, device)
        times = [timed(lambda b=b: _search(query_emb[b], index, work.top_k, device), device)[1]
                 for _ in range(repeats) for b in batches]
        blocks[str(size)] = summarize(times, items=len(times) * size)
    largest = max(work.batch_sizes)
    floor_s = matmul_seconds(query_emb[cycled_batches(list(range(len(query_emb))), largest)[0]], index, device,
                             repeats=max(3, repeats), warmup=max(1, warmup))
    flops = 2.0 * largest * index.size * int(index.embeddings.shape[1])
    search_s = blocks[str(largest)]["p50_ms"] / 1000.0
    return {"passages": index.size, "dim": int(index.embeddings.shape[1]), "top_k": work.top_k,
            "source": index.source, "dtype": str(index.embeddings.dtype).replace("torch.", ""),
            "by_block": blocks, "matmul_block": largest, "matmul_ms": _r(floor_s * 1000),
            "matmul_gflops": _r(flops / floor_s / 1e9), "search_gflops": _r(flops / search_s / 1e9),
            "matmul_ratio": _r(floor_s / search_s)}


def matmul_seconds(query_emb: np.ndarray, index: PassageIndex, device: str, repeats: int, warmup: int) -> float:
    """Median time of the bare score matmul for one query block (the exact search's arithmetic)."""
    passages = index.embeddings
    queries = torch.from_numpy(np.ascontiguousarray(query_emb)).to(device=passages.device, dtype=passages.dtype)
    for _ in range(warmup):
        queries @ passages.T
    return float(np.median([timed(lambda: queries @ passages.T, device)[1] for _ in range(repeats)]))


# ---------------------------------------------------------------- output


def settings(args: argparse.Namespace, batch_sizes: list[int], work: Workload) -> dict[str, Any]:
    return {"num_queries": len(work.queries), "batch_sizes": batch_sizes, "repeats": args.repeats,
            "warmup": args.warmup, "threads": torch.get_num_threads(), "top_k": args.top_k,
            "passage_batch_size": args.batch_size, "throughput_passages": len(work.passages),
            "max_passages": args.max_passages}


def format_table(name: str, figures: dict[str, Any], search: dict[str, Any] | None) -> str:
    """A short human table of one model's figures."""
    rows = [f"{'measure':<22}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'per s':>11}"]

    def row(label: str, stats: dict) -> None:
        rows.append(f"{label:<22}{stats['p50_ms']:>10.2f}{stats['p95_ms']:>10.2f}{stats['p99_ms']:>10.2f}"
                    f"{stats['mean_ms']:>10.2f}{stats['qps']:>11.1f}")

    for size, stats in figures["encode"].items():
        row(f"encode batch {size}", stats)
    for size, stats in (search or {}).get("by_block", {}).items():
        row(f"search block {size}", stats)
    e2e = figures.get("end_to_end")
    if e2e:
        row("end-to-end 1 query", e2e)
    lines = [f"{name}: load {figures['load_s']:.2f} s"] + rows
    if e2e:
        lines.append(f"end-to-end split: encode {e2e['encode_share']:.0%} ({e2e['encode_mean_ms']:.2f} ms), "
                     f"search {e2e['search_share']:.0%} ({e2e['search_mean_ms']:.2f} ms)")
    if search:
        lines.append(f"search over {search['passages']} x {search['dim']} ({search['dtype']}): block "
                     f"{search['matmul_block']} at {search['search_gflops']:.1f} GFLOP/s, bare matmul "
                     f"{search['matmul_gflops']:.1f} GFLOP/s (ratio {search['matmul_ratio']:.2f})")
    lines.append(f"collection encoding: {figures['passages_per_s']:.1f} passages/s")
    return "\n".join(lines)


# ---------------------------------------------------------------- LoRA comparison


def find_adapter(path) -> Path:
    """The adapter folder itself, or the ``model`` folder inside a ``finetune.py --lora`` output folder."""
    from .models import is_adapter_folder

    for folder in (Path(path), Path(path) / "model"):
        if is_adapter_folder(str(folder)):
            return folder
    raise InputError(path, "is not a LoRA adapter folder (no adapter_config.json, here or in model/); "
                           "time a full model with inference_times.py")


def adapter_base(adapter) -> str:
    """The base model an adapter folder names (after load_model pointed it at a reachable copy)."""
    import json

    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise InputError(Path(adapter) / "adapter_config.json", "names no base_model_name_or_path; pass --base-model")
    return base


def max_differences(models: dict[str, Any], texts: list[str], batch_size: int) -> dict[str, float]:
    """Largest absolute embedding difference of the merged model against the unmerged one and the base."""
    from .search import encode_texts

    emb = {name: encode_texts(model, texts, batch_size=batch_size) for name, model in models.items()}
    return {"merged_vs_unmerged": float(np.abs(emb["merged"] - emb["unmerged"]).max()),
            "merged_vs_base": float(np.abs(emb["merged"] - emb["base"]).max())}


def ratios_to(figures: dict[str, dict], reference: str) -> dict[str, dict]:
    """Time ratios of each model to ``reference`` (above 1: slower); ``encode`` is the headline.

    Ratios compare medians, which a shared machine's occasional stalls do not move; ``encode`` is the
    geometric mean over batch sizes of the median encode-latency ratios, so each batch size counts alike.
    """
    base = figures[reference]
    out = {}
    for name, fig in figures.items():
        per_batch = {size: _r(fig["encode"][size]["p50_ms"] / stats["p50_ms"])
                     for size, stats in base["encode"].items()}
        ratio = {"encode": _r(float(np.exp(np.mean(np.log(list(per_batch.values())))))), "encode_p50": per_batch,
                 "passages": _r(base["passages_per_s"] / fig["passages_per_s"]),
                 "load": _r(fig["load_s"] / base["load_s"])}
        if "end_to_end" in fig:
            ratio["end_to_end"] = _r(fig["end_to_end"]["p50_ms"] / base["end_to_end"]["p50_ms"])
        out[name] = ratio
    return out


def format_comparison(figures: dict[str, dict], ratios: dict[str, dict]) -> str:
    names = list(figures)
    lines = [f"{'':<24}" + "".join(f"{name:>12}" for name in names)]

    def row(label: str, values, fmt: str) -> None:
        lines.append(f"{label:<24}" + "".join(f"{v:>12{fmt}}" for v in values))

    row("load s", [figures[n]["load_s"] for n in names], ".3f")
    for size in figures[names[0]]["encode"]:
        row(f"encode batch {size} p50 ms", [figures[n]["encode"][size]["p50_ms"] for n in names], ".2f")
    if "end_to_end" in figures[names[0]]:
        row("end-to-end p50 ms", [figures[n]["end_to_end"]["p50_ms"] for n in names], ".2f")
    row("passages/s", [figures[n]["passages_per_s"] for n in names], ".1f")
    row("encode time / base", [ratios[n]["encode"] for n in names], ".3f")
    row("passages time / base", [ratios[n]["passages"] for n in names], ".3f")
    return "\n".join(lines)
