"""Exact dense retrieval over a collection too large for memory: chunked encoding, embedding cache, running top-k.

The collection streams chunk by chunk. Each chunk is encoded (or loaded from the embedding cache) and
scored against every query; a running exact top-k per query absorbs it, so memory is O(queries x k +
chunk) whatever the collection size. After each chunk the running top-k is saved, so a killed run
resumes where it stopped and ends with the same output as an uninterrupted one.

Top-k selection is hand-written rather than faiss ``IndexFlatIP`` or a plain ``torch.topk`` per block:
on CPU, ``torch.topk`` over a score block costs as much as the matmul that produced it. Instead each
query keeps the k-th best score seen so far as a threshold; a block's scores are compared against it
while the block is still in cache, and only the few that reach it (ties included) are kept. Those are
merged now and then by one selection over int64 keys that pack (score, pid), so ranking by score
descending then pid ascending is exact and deterministic. On CPU each worker thread runs its own
single-threaded matmul over its own queries (see ``RunningTopK.add``); see docs/mining.md for figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .errors import InputError
from .formats import atomic_output, fingerprint, iter_table
from .models import model_fingerprint

log = logging.getLogger(__name__)

PAD_PID = -1
# Blocks sized so a CPU score block (256 x 2048 float32 = 2 MiB) stays in L2 while it is thresholded;
# on GPU, larger blocks keep the device busy.
CPU_BLOCKS = (256, 2048)
MIN_CPU_Q_BLOCK = 32  # below this a worker's matmul is too thin to run near peak
GPU_BLOCKS = (4096, 32768)
GPU_DTYPE = torch.float16
BATCH_SIZES = {"cuda": (512, 1024), "cpu": (64, 256)}  # (passages, queries) per encoding batch
STATE_FILE = "topk.npz"
STATE_META = "state.json"


def default_batch_sizes(device: str) -> tuple[int, int]:
    """Encoding batch sizes (passages, queries): large on GPU, smaller on CPU where they only add latency."""
    return BATCH_SIZES["cuda" if str(device).startswith("cuda") else "cpu"]


def encode_texts(model, texts: list[str], batch_size: int, progress: bool = False) -> np.ndarray:
    """Embed texts with the model's own pipeline (including its Normalize step): float32 [n, d]."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    emb = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
    return np.ascontiguousarray(emb, dtype=np.float32)


# ---------------------------------------------------------------- exact top-k
#
# A (score, pid) pair is packed into one int64 key whose integer order is the ranking order: the high
# 32 bits are the float32 score's bits made monotone, the low 32 bits are 0xFFFFFFFF - pid. One
# selection on the keys then ranks by score and breaks ties by the lower pid, with no second sort.
# The price is that pids must lie in [0, 0xFFFFFFFF), which MS MARCO's (< 9M) easily do.

_LOW = 0xFFFFFFFF
_SIGN_FLIP = 0x7FFFFFFF


def _check_pids(pids: np.ndarray) -> None:
    if pids.size and (pids.min() < 0 or pids.max() >= _LOW):
        raise ValueError(f"pids must lie in [0, {_LOW}) for the exact top-k; found {pids.min()}..{pids.max()}")


def _encode(scores, pids):
    """Keys for float32 scores and int64 pids (numpy arrays or torch tensors, broadcastable)."""
    if isinstance(scores, torch.Tensor):
        bits = (scores.float() + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into 0.0
        bits = torch.where(bits < 0, bits ^ _SIGN_FLIP, bits)
    else:
        bits = (scores.astype(np.float32) + np.float32(0)).view(np.int32).astype(np.int64)
        bits = np.where(bits < 0, bits ^ _SIGN_FLIP, bits)
    return (bits << 32) | (_LOW - pids)


def _decode(keys) -> tuple[np.ndarray, np.ndarray]:
    """numpy (scores float32, pids int64) back from keys."""
    keys = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else keys
    high = keys >> 32
    scores = np.where(high < 0, high ^ _SIGN_FLIP, high).astype(np.int32).view(np.float32)
    return scores, _LOW - (keys & _LOW)


def _key_scores(keys):
    """Scores of keys, in the keys' own library (thresholds stay on the device)."""
    high = keys >> 32
    if isinstance(keys, torch.Tensor):
        return torch.where(high < 0, high ^ _SIGN_FLIP, high).to(torch.int32).view(torch.float32)
    return np.where(high < 0, high ^ _SIGN_FLIP, high).astype(np.int32).view(np.float32)


PAD_KEY = int(_encode(np.array([-np.inf], dtype=np.float32), np.array([_LOW], dtype=np.int64))[0])


def _device_of(device) -> torch.device:
    return torch.device("cuda" if str(device).startswith("cuda") else "cpu")


def _as_tensor(array, device: torch.device, dtype) -> torch.Tensor:
    tensor = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device=device, dtype=dtype).contiguous()


def _top_keys(keys, k: int):
    """The k largest keys of each row, unordered (numpy partition on CPU: torch's CPU topk is far slower)."""
    if isinstance(keys, torch.Tensor):
        return torch.topk(keys, k, dim=1, sorted=False).values
    return np.partition(keys, keys.shape[1] - k, axis=1)[:, keys.shape[1] - k:]


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class RunningTopK:
    """Per-query best k (score desc, pid asc) over every passage block added so far.

    On CPU the keys live in numpy and scores come from a float32 torch matmul; on CUDA everything
    stays on the device and scores are float16.
    """

    def __init__(self, n_queries: int, k: int, device="cpu"):
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.device = _device_of(device)
        self.on_gpu = self.device.type == "cuda"
        self.dtype = GPU_DTYPE if self.on_gpu else torch.float32
        if self.on_gpu:
            self.keys = torch.full((n_queries, k), PAD_KEY, dtype=torch.int64, device=self.device)
        else:
            self.keys = np.full((n_queries, k), PAD_KEY, dtype=np.int64)
        self.q_block, self.p_block = GPU_BLOCKS if self.on_gpu else CPU_BLOCKS

    @classmethod
    def from_arrays(cls, scores: np.ndarray, pids: np.ndarray, device="cpu") -> RunningTopK:
        state = cls(scores.shape[0], scores.shape[1], device)
        keys = _encode(np.asarray(scores, dtype=np.float32), np.where(pids == PAD_PID, _LOW, pids).astype(np.int64))
        state.keys = torch.from_numpy(keys).to(state.device) if state.on_gpu else keys
        return state

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [nq, k], pids int64 [nq, k]) best first; missing entries are pid -1, score -inf."""
        keys = self.keys.cpu().numpy() if self.on_gpu else self.keys
        scores, pids = _decode(-np.sort(-keys, axis=1) if keys.size else keys)
        return scores, np.where(pids == _LOW, PAD_PID, pids)

    def merge(self, scores: np.ndarray, pids: np.ndarray) -> None:
        """Fold another top-k (e.g. of a shard of the collection; pid -1 pads) into this one, exactly."""
        pids = np.asarray(pids, dtype=np.int64)
        _check_pids(pids[pids != PAD_PID])
        keys = _encode(np.asarray(scores, dtype=np.float32), np.where(pids == PAD_PID, _LOW, pids))
        keys = torch.from_numpy(keys).to(self.device) if self.on_gpu else keys
        self.keys = _top_keys(self._cat(self.keys, keys), self.k)

    def add(self, query_emb, passage_emb, passage_ids) -> None:
        """Fold a block of passages into every query's top-k."""
        ids_np = np.asarray(passage_ids, dtype=np.int64)
        _check_pids(ids_np)
        queries = _as_tensor(query_emb, self.device, self.dtype)
        passages = _as_tensor(passage_emb, self.device, self.dtype)
        ids = torch.from_numpy(ids_np).to(self.device) if self.on_gpu else ids_np
        if queries.shape[0] != self.keys.shape[0]:
            raise ValueError(f"{queries.shape[0]} query rows for a top-k of {self.keys.shape[0]} queries")
        if passages.shape[0] != len(ids_np):
            raise ValueError("passage embeddings and ids differ in length")
        if passages.shape[0] == 0:
            return
        p_block = max(self.p_block, self.k)
        n_queries = queries.shape[0]
        workers = 1 if self.on_gpu else max(1, min(torch.get_num_threads(), n_queries // MIN_CPU_Q_BLOCK))
        q_block = self.q_block if workers == 1 else max(MIN_CPU_Q_BLOCK, min(self.q_block, -(-n_queries // workers)))
        blocks = [slice(start, start + q_block) for start in range(0, n_queries, q_block)]

        def run(rows: slice) -> None:
            self.keys[rows] = self._add_block(queries[rows], passages, ids, self.keys[rows], p_block)

        if workers == 1:
            for rows in blocks:
                run(rows)
            return
        # One single-threaded matmul per worker thread, each on its own query blocks: no barrier between
        # torch's intra-op threads per small block, which on a loaded 2-core machine tripled throughput.
        with _torch_threads(1), ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, blocks))

    def _add_block(self, queries, passages, ids, keys, p_block):
        k, n_rows = self.k, queries.shape[0]
        threshold = _key_scores(keys).min(1)
        threshold = threshold.values.to(self.dtype) if self.on_gpu else threshold
        pending = _Pending(n_rows, self.on_gpu, self.device)
        for p_start in range(0, passages.shape[0], p_block):
            block_ids = ids[p_start:p_start + p_block]
            scores = queries @ passages[p_start:p_start + p_block].T
            if not self.on_gpu:
                scores = scores.numpy()
            if scores.shape[1] >= k and bool((threshold == -np.inf).any()):
                # Some query has fewer than k so far: rank this whole block by key, once.
                top = _top_keys(_encode(scores, block_ids[None, :]), k)
                keys = _top_keys(self._cat(keys, top), k)
            else:
                hits = scores >= threshold[:, None]
                row, col = hits.nonzero(as_tuple=True) if self.on_gpu else hits.nonzero()
                pending.add(row, _encode(scores[row, col], block_ids[col]))
                if pending.size < max(1, n_rows * k // 2):
                    continue
                keys = _top_keys(self._cat(keys, pending.dense(PAD_KEY)), k)
                pending = _Pending(n_rows, self.on_gpu, self.device)
            threshold = _key_scores(keys).min(1)
            threshold = threshold.values.to(self.dtype) if self.on_gpu else threshold
        if pending.size:
            keys = _top_keys(self._cat(keys, pending.dense(PAD_KEY)), k)
        return keys

    def _cat(self, a, b):
        return torch.cat([a, b], dim=1) if self.on_gpu else np.concatenate([a, b], axis=1)


class _Pending:
    """Candidate keys gathered row by row, laid out densely (one row per query, padded) for the merge."""

    def __init__(self, n_rows: int, on_gpu: bool, device):
        self.n_rows, self.on_gpu, self.device = n_rows, on_gpu, device
        self.rows, self.cols, self.keys = [], [], []
        self.fill = torch.zeros(n_rows, dtype=torch.int64, device=device) if on_gpu else np.zeros(n_rows, np.int64)
        self.size = 0

    def add(self, row, keys) -> None:
        if not len(row):
            return
        # nonzero() lists rows in order, so a candidate's slot is its offset within its row's run.
        if self.on_gpu:
            counts = torch.bincount(row, minlength=self.n_rows)
            offsets = torch.arange(len(row), device=self.device) - (torch.cumsum(counts, 0) - counts)[row]
        else:
            counts = np.bincount(row, minlength=self.n_rows)
            offsets = np.arange(len(row)) - (np.cumsum(counts) - counts)[row]
        self.rows.append(row)
        self.cols.append(offsets + self.fill[row])
        self.keys.append(keys)
        self.fill = self.fill + counts
        self.size += len(row)

    def dense(self, pad: int):
        width = int(self.fill.max())
        if self.on_gpu:
            out = torch.full((self.n_rows, width), pad, dtype=torch.int64, device=self.device)
            out[torch.cat(self.rows), torch.cat(self.cols)] = torch.cat(self.keys)
        else:
            out = np.full((self.n_rows, width), pad, dtype=np.int64)
            out[np.concatenate(self.rows), np.concatenate(self.cols)] = np.concatenate(self.keys)
        return out


def exact_topk(query_emb, passage_emb, passage_ids, k, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: scores float32 [nq, k], pids int64 [nq, k].

    Ties go to the higher score, then the lower pid. With fewer than k passages the rows are padded
    with pid -1 and score -inf. On CUDA the scores are computed in float16.
    """
    state = RunningTopK(len(query_emb), int(k), device)
    state.add(query_emb, passage_emb, passage_ids)
    return state.arrays()


def run_frame(qids, scores, pids) -> pd.DataFrame:
    """A contract run (qid, pid, rank 1-based int32, score float32) from top-k arrays, without the -1 pads."""
    qids = np.asarray(qids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    pids = np.asarray(pids, dtype=np.int64)
    order = np.argsort(qids, kind="stable")
    scores, pids, qids = scores[order], pids[order], qids[order]
    real = pids != PAD_PID
    ranks = np.broadcast_to(np.arange(1, pids.shape[1] + 1, dtype=np.int32), pids.shape)
    return pd.DataFrame({
        "qid": np.repeat(qids, pids.shape[1]).reshape(pids.shape)[real],
        "pid": pids[real],
        "rank": ranks[real],
        "score": scores[real],
    })


# ---------------------------------------------------------------- embedding cache


class EmbeddingCache:
    """One folder per (model weights, collection, chunk size, max_seq_length, dtype) of per-chunk ``.npy`` files.

    ``chunk_00000.npy`` holds the embeddings, ``chunk_00000.pids.npy`` the pids; ``manifest.json``
    lists the complete chunks, and ``total_chunks`` once a pass reached the end of the collection.
    Every file is written atomically, and a chunk is listed only after both its files exist.
    """

    def __init__(self, root, *, model_fp: str, collection_path, collection_fp: str, chunk_size: int,
                 max_seq_length: int | None, dtype: str):
        self.key = {"model_fingerprint": model_fp, "collection": str(collection_path),
                    "collection_fingerprint": collection_fp, "chunk_size": chunk_size,
                    "max_seq_length": max_seq_length, "dtype": dtype}
        tag = f"{model_fp}-{collection_fp}-c{chunk_size}-s{max_seq_length}-{dtype}"
        self.folder = Path(root) / tag
        self.dtype = np.dtype(dtype)
        self.manifest_path = self.folder / "manifest.json"
        self.manifest = {**self.key, "complete": [], "total_chunks": None}
        if self.manifest_path.exists():
            try:
                self.manifest = json.loads(self.manifest_path.read_text())
            except json.JSONDecodeError:
                log.warning("unreadable cache manifest %s: rebuilding the cache", self.manifest_path)

    @classmethod
    def for_model(cls, root, model, collection_path, chunk_size: int, *, model_fp: str | None = None,
                  collection_fp: str | None = None) -> EmbeddingCache:
        """The cache of ``model`` over ``collection_path``: every reader and writer builds its key here."""
        return cls(root, model_fp=model_fp or model_fingerprint(model), collection_path=Path(collection_path),
                   collection_fp=collection_fp or fingerprint(collection_path), chunk_size=chunk_size,
                   max_seq_length=getattr(model, "max_seq_length", None),
                   dtype="float16" if _model_device(model) == "cuda" else "float32")

    def _paths(self, index: int) -> tuple[Path, Path]:
        return self.folder / f"chunk_{index:05d}.npy", self.folder / f"chunk_{index:05d}.pids.npy"

    @property
    def total_chunks(self) -> int | None:
        total = self.manifest.get("total_chunks")
        return total if total is not None and all(self.has(index) for index in range(total)) else None

    def has(self, index: int) -> bool:
        return index in self.manifest.get("complete", []) and all(p.exists() for p in self._paths(index))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        emb_path, pid_path = self._paths(index)
        return np.load(emb_path), np.load(pid_path)

    def store(self, index: int, embeddings: np.ndarray, pids: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for path, array in zip(self._paths(index), (embeddings.astype(self.dtype), pids.astype(np.int64))):
            with atomic_output(path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, array)
        self.manifest["complete"] = sorted(set(self.manifest.get("complete", [])) | {index})
        self._save_manifest()

    def finish(self, total_chunks: int) -> None:
        if self.manifest.get("total_chunks") != total_chunks:
            self.manifest["total_chunks"] = total_chunks
            self._save_manifest()

    def _save_manifest(self) -> None:
        with atomic_output(self.manifest_path) as tmp:
            tmp.write_text(json.dumps(self.manifest, indent=2) + "\n")


# ---------------------------------------------------------------- resume state


def _queries_fingerprint(qids: np.ndarray, texts: list[str]) -> str:
    digest = hashlib.sha256(qids.astype(np.int64).tobytes())
    for text in texts:
        digest.update(text.encode("utf-8", errors="replace") + b"\0")
    return digest.hexdigest()[:16]


def _save_state(state_dir: Path, meta: dict, topk: RunningTopK, positive_scores: np.ndarray | None) -> None:
    """One atomic file holds the keys, the positives' scores and the meta, so no crash can pair them wrongly.

    The keys are saved as they are (unsorted, 8 bytes per entry): no per-chunk sort of queries x k.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    keys = topk.keys.cpu().numpy() if topk.on_gpu else topk.keys
    arrays = {"keys": keys, "meta": np.array(json.dumps(meta))}
    if positive_scores is not None:
        arrays["positive_scores"] = positive_scores
    with atomic_output(state_dir / STATE_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    with atomic_output(state_dir / STATE_META) as tmp:  # a readable copy of the meta, for people
        tmp.write_text(json.dumps(meta, indent=2) + "\n")


def _load_state(state_dir: Path, meta: dict) -> tuple[int, np.ndarray, np.ndarray | None] | None:
    if not (state_dir / STATE_FILE).exists():
        return None
    with np.load(state_dir / STATE_FILE) as data:
        saved = json.loads(str(data["meta"]))
        different = [key for key in meta if saved.get(key) != meta[key]]
        if different:
            raise InputError(state_dir, f"resume state was made with different {', '.join(different)}; "
                                        "pass --overwrite to start again")
        positives = data["positive_scores"] if "positive_scores" in data.files else None
        return saved["next_chunk"], data["keys"], positives


def clear_state(state_dir) -> None:
    if state_dir is not None and Path(state_dir).exists():
        shutil.rmtree(state_dir)


# ---------------------------------------------------------------- judged positives


def _positive_pairs(qrels: pd.DataFrame | None, qids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query row, pid) of every judged positive (rel > 0) of the searched queries."""
    if qrels is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    judged = qrels[qrels["rel"].to_numpy() > 0].drop_duplicates(["qid", "pid"])
    order = np.argsort(qids, kind="stable")
    pos = np.searchsorted(qids, judged["qid"].to_numpy(dtype=np.int64), sorter=order)
    pos = np.minimum(pos, len(qids) - 1)
    rows = order[pos]
    known = qids[rows] == judged["qid"].to_numpy(dtype=np.int64)
    return rows[known].astype(np.int64), judged["pid"].to_numpy(dtype=np.int64)[known]


def _score_positives(query_tensor, passages, passage_ids, rows, pids, out) -> None:
    """Fill ``out`` for the positives whose passage is in this chunk, with the search's own arithmetic."""
    if not len(rows):
        return
    order = np.argsort(passage_ids, kind="stable")
    pos = np.minimum(np.searchsorted(passage_ids, pids, sorter=order), len(passage_ids) - 1)
    here = passage_ids[order[pos]] == pids
    if not here.any():
        return
    q = torch.from_numpy(rows[here]).to(query_tensor.device)
    p = torch.from_numpy(order[pos][here]).to(query_tensor.device)
    scores = (query_tensor[q].float() * passages[p].float()).sum(dim=1)
    # Rounded like the search's own scores (float16 on GPU), so margins compare like with like.
    out[here] = scores.to(query_tensor.dtype).float().cpu().numpy()


# ---------------------------------------------------------------- the whole collection


@dataclass
class SearchResult:
    run: pd.DataFrame
    positive_scores: pd.DataFrame | None
    stats: dict = field(default_factory=dict)


def _model_device(model) -> str:
    return "cuda" if getattr(model, "device", torch.device("cpu")).type == "cuda" else "cpu"


def _chunks(collection_path, chunk_size: int, cache: EmbeddingCache | None, start: int
            ) -> Iterator[tuple[int, pd.DataFrame | None]]:
    """(index, frame) per chunk; frame is None when the cache alone can supply the chunk."""
    total = cache.total_chunks if cache is not None else None
    if total is not None:
        for index in range(start, total):
            yield index, None
        return
    for index, frame in enumerate(iter_table(collection_path, "collection", chunk_rows=chunk_size)):
        if index >= start:
            yield index, frame
    if cache is not None:
        cache.finish(index + 1)


def search_collection(model, queries: pd.DataFrame, collection_path, *, top_k: int = 200,
                      chunk_size: int = 200_000, batch_size: int | None = None,
                      query_batch_size: int | None = None, cache_dir="cache", state_dir=None, resume: bool = False,
                      qrels: pd.DataFrame | None = None, progress: bool = True) -> SearchResult:
    """Exact top-k of every query over the whole collection, chunk by chunk.

    ``cache_dir=None`` disables the embedding cache. With ``state_dir`` the running top-k is saved
    after every chunk; ``resume=True`` continues from it (the state is removed once the search ends).
    With ``qrels``, the score of each judged positive (rel > 0) of each query is recorded as well.
    """
    started = time.perf_counter()
    collection_path = Path(collection_path)
    if not collection_path.is_file():
        raise InputError(collection_path, "no such file")
    if chunk_size < 1 or top_k < 1:
        raise ValueError("chunk_size and top_k must be at least 1")
    device = _model_device(model)
    default_passages, default_queries = default_batch_sizes(device)
    batch_size = batch_size or default_passages
    query_batch_size = query_batch_size or default_queries

    qids = queries["qid"].to_numpy(dtype=np.int64)
    texts = queries["text"].astype(str).tolist()
    model_fp = model_fingerprint(model)
    collection_fp = fingerprint(collection_path)
    cache = None
    if cache_dir is not None:
        cache = EmbeddingCache.for_model(cache_dir, model, collection_path, chunk_size, model_fp=model_fp,
                                         collection_fp=collection_fp)

    positives_q, positives_pid = _positive_pairs(qrels, qids)
    meta = {"model_fingerprint": model_fp, "collection_fingerprint": collection_fp, "chunk_size": chunk_size,
            "top_k": top_k, "queries": _queries_fingerprint(qids, texts), "with_positives": qrels is not None,
            "device": device}

    state_dir = Path(state_dir) if state_dir is not None else None
    topk = RunningTopK(len(qids), top_k, device)
    positive_scores = np.full(len(positives_q), np.nan, dtype=np.float32) if qrels is not None else None
    start_chunk = 0
    if resume and state_dir is not None:
        loaded = _load_state(state_dir, meta)
        if loaded is not None:
            start_chunk, keys, saved_positives = loaded
            topk.keys = torch.from_numpy(keys).to(topk.device) if topk.on_gpu else keys
            if positive_scores is not None and saved_positives is not None:
                positive_scores = saved_positives
            log.info("resuming after %d finished chunk(s) from %s", start_chunk, state_dir)

    t0 = time.perf_counter()
    query_emb = encode_texts(model, texts, query_batch_size, progress=progress and len(texts) > 10_000)
    query_tensor = _as_tensor(query_emb, topk.device, topk.dtype)
    stats = {"queries": len(qids), "top_k": top_k, "chunk_size": chunk_size, "device": device,
             "resumed_from_chunk": start_chunk, "chunks": start_chunk, "passages_searched": 0, "encoded": 0,
             "cache_hits": 0, "query_encode_seconds": time.perf_counter() - t0, "encode_seconds": 0.0,
             "search_seconds": 0.0}

    from tqdm.auto import tqdm

    bar = tqdm(desc="chunks", unit="chunk", initial=start_chunk, disable=not progress)
    for index, frame in _chunks(collection_path, chunk_size, cache, start_chunk):
        t0 = time.perf_counter()
        if cache is not None and cache.has(index):
            passage_emb, passage_ids = cache.load(index)
            stats["cache_hits"] += 1
        else:
            passage_ids = frame["pid"].to_numpy(dtype=np.int64)
            passage_emb = encode_texts(model, frame["text"].tolist(), batch_size, progress=progress)
            stats["encoded"] += len(passage_ids)
            if cache is not None:
                cache.store(index, passage_emb, passage_ids)
        t1 = time.perf_counter()
        stats["encode_seconds"] += t1 - t0
        passages = _as_tensor(passage_emb, topk.device, topk.dtype)
        topk.add(query_tensor, passages, passage_ids)
        if positive_scores is not None:
            _score_positives(query_tensor, passages, passage_ids, positives_q, positives_pid, positive_scores)
        stats["search_seconds"] += time.perf_counter() - t1
        stats["chunks"] = index + 1
        stats["passages_searched"] += len(passage_ids)
        if state_dir is not None:
            _save_state(state_dir, {**meta, "next_chunk": index + 1}, topk, positive_scores)
        bar.update(1)
    bar.close()

    scores, pids = topk.arrays()
    run = run_frame(qids, scores, pids)
    positives = None
    if positive_scores is not None:
        found = ~np.isnan(positive_scores)
        positives = pd.DataFrame({"qid": qids[positives_q[found]], "pid": positives_pid[found],
                                  "score": positive_scores[found]}).sort_values(["qid", "pid"], ignore_index=True)
        stats["positives_found"] = int(found.sum())
        stats["positives_missing"] = int((~found).sum())
    clear_state(state_dir)
    stats["seconds"] = time.perf_counter() - started
    return SearchResult(run=run, positive_scores=positives, stats=stats)
