"""Exact top-k speed: msmarco_ft.search.exact_topk against faiss IndexFlatIP and plain numpy, side by side.

    python benchmarks/bench_search.py                                   # ~1-2 minutes on 2 CPU cores
    python benchmarks/bench_search.py --queries 2000 --passages 500000  # the issue's CPU size
    python benchmarks/bench_search.py --device cuda --queries 10000 --passages 2000000

Random unit vectors stand in for embeddings. Each method runs ``--repeats`` times, interleaved so that
load from other processes hits all of them alike, and the best time counts. Throughput is
2 * queries * passages * dim floating-point operations over the time; the machine's sgemm figure is
the best of torch and numpy on one large matmul of the same inner dimension.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msmarco_ft.search import exact_topk  # noqa: E402

MATMUL = "matmul only (no top-k)"


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1).numpy()


def sgemm_gflops(dim: int, device: str, seconds: float = 3.0) -> dict[str, float]:
    """Best sustained matmul rate of [2048, dim] x [dim, 8192] over a few seconds, per library."""
    rates = {}
    a, b = unit_vectors(2048, dim, 1), unit_vectors(8192, dim, 2)
    flops = 2 * a.shape[0] * b.shape[0] * dim
    if device == "cuda":
        ta, tb = torch.from_numpy(a).cuda().half(), torch.from_numpy(b).cuda().half()
        runs = {"torch-fp16": lambda: ta @ tb.T}
    else:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
        runs = {"torch": lambda: ta @ tb.T, "numpy": lambda: np.matmul(a, b.T, out=out)}
    for name, run in runs.items():
        run()
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        rates[name] = flops / best / 1e9
    return rates


def numpy_topk(queries: np.ndarray, passages: np.ndarray, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The plain approach: the full score matrix (per query block, to bound memory), argpartition, sort."""
    scores_out = np.empty((len(queries), k), dtype=np.float32)
    ids_out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        scores = queries[start:start + block] @ passages.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        ids_out[start:start + block] = np.take_along_axis(top, order, axis=1)
        scores_out[start:start + block] = np.take_along_axis(top_scores, order, axis=1)
    return scores_out, ids_out


def matmul_only(queries: np.ndarray, passages: np.ndarray, block: int = 16384) -> None:
    """The same score matrix with no selection at all: the ceiling any exact search can reach right now."""
    q = torch.from_numpy(queries)
    out = torch.empty((len(queries), block), dtype=torch.float32)
    for start in range(0, len(passages), block):
        p = torch.from_numpy(passages[start:start + block])
        torch.mm(q, p.T, out=out[:, :len(p)])


def faiss_topk(queries: np.ndarray, passages: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(passages.shape[1])
    index.add(passages)
    return index.search(queries, k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000, help="query count (default 2000)")
    parser.add_argument("--passages", type=int, default=200_000, help="passage count (default 200000)")
    parser.add_argument("--dim", type=int, default=384, help="embedding width (default 384)")
    parser.add_argument("--k", type=int, default=200, help="top-k (default 200)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per method; best counts (default 2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where ours runs (default cpu)")
    parser.add_argument("--skip-numpy", action="store_true", help="leave out the plain numpy baseline")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    queries = unit_vectors(args.queries, args.dim, 10)
    passages = unit_vectors(args.passages, args.dim, 11)
    ids = np.arange(args.passages, dtype=np.int64)
    flops = 2 * args.queries * args.passages * args.dim
    print(f"{args.queries} queries x {args.passages} passages x {args.dim} dims, k={args.k}, device={args.device}, "
          f"torch threads={torch.get_num_threads()}")

    methods = {"ours (exact_topk)": lambda: exact_topk(queries, passages, ids, args.k, device=args.device)}
    if args.device == "cpu":
        methods[MATMUL] = lambda: matmul_only(queries, passages)
        methods["faiss IndexFlatIP"] = lambda: faiss_topk(queries, passages, args.k)
        if not args.skip_numpy:
            methods["numpy matmul+argpartition"] = lambda: numpy_topk(queries, passages, args.k)
    best = {name: float("inf") for name in methods}
    results = {}
    for _ in range(args.repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            results[name] = run()
            if args.device == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    sgemm = sgemm_gflops(args.dim, args.device)
    peak = max(sgemm.values())

    ours_scores, ours_ids = results["ours (exact_topk)"]
    for name, (scores, _) in ((n, r) for n, r in results.items() if n != MATMUL):
        # Same scores at every rank (ids may legitimately differ only between equal scores).
        gap = float(np.max(np.abs(np.asarray(scores, dtype=np.float32) - ours_scores)))
        if gap > (1e-2 if args.device == "cuda" else 1e-4):
            print(f"warning: {name} disagrees with ours by up to {gap:.2e} in score")

    ours_time = best["ours (exact_topk)"]
    print("\nmeasured sgemm: " + ", ".join(f"{n} {g:.1f} GFLOP/s" for n, g in sgemm.items()))
    # Two ceilings: the best short sgemm burst, and the same-shaped matmul timed alongside (on a shared
    # machine the second is the fair one: it sees the same load as the searches).
    sustained = best.get(MATMUL)
    print(f"{'method':<28} {'seconds':>9} {'GFLOP/s':>9} {'% sgemm':>8} {'% matmul':>9} {'ours faster by':>15}")
    figures = {}
    for name, seconds in best.items():
        rate = flops / seconds / 1e9
        of_matmul = sustained / seconds if sustained else float("nan")
        figures[name] = {"seconds": seconds, "gflops": rate, "fraction_of_sgemm": rate / peak,
                         "fraction_of_matmul_only": of_matmul, "ours_speedup": seconds / ours_time}
        print(f"{name:<28} {seconds:>9.2f} {rate:>9.1f} {100 * rate / peak:>7.0f}% {100 * of_matmul:>8.0f}% "
              f"{seconds / ours_time:>14.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"arguments": vars(args) | {"json": str(args.json)}, "sgemm_gflops": sgemm,
                                         "methods": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
