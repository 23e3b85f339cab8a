"""Peak memory of process_train_queries.py at 1x and 4x the collection size, same queries: the ratio should be ~1.

    python benchmarks/bench_mining_memory.py                       # ~2-3 minutes on 2 CPU cores
    python benchmarks/bench_mining_memory.py --passages 50000 --chunk-size 10000

Both collections come from the sample generator (msmarco_ft.sample); the 1x sample's train queries are
searched in both. A fixed random 1-layer, 384-wide BERT with the real tokenizer stands in for the model:
it encodes many times faster than all-MiniLM-L6-v2 and yields 384-dim embeddings, so a chunk weighs
what it would with the real model. Each run is a fresh process; its peak RSS is read by a parent that
waits for nothing else (``resource.getrusage(RUSAGE_CHILDREN)``). The embedding cache is off, so every
passage is encoded and searched. Target: 4x / 1x below 1.3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msmarco_ft.models import build_random_model  # noqa: E402
from msmarco_ft.sample import write_sample  # noqa: E402

# Runs the command and prints its peak RSS in KiB (Linux ru_maxrss units).
MEASURE = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
           "stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss_mib(command: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=5000, help="1x collection size (default 5000)")
    parser.add_argument("--factor", type=int, default=4, help="size of the larger collection (default 4)")
    parser.add_argument("--train-queries", type=int, default=1000, help="queries searched (default 1000)")
    parser.add_argument("--chunk-size", type=int, default=2500, help="chunk size (default 2500)")
    parser.add_argument("--work-dir", type=Path, help="keep the data here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = build_random_model(work, hidden=384, layers=1, heads=6)
        sizes = {"1x": args.passages, f"{args.factor}x": args.passages * args.factor}
        for label, passages in sizes.items():
            write_sample(work / label, passages, args.train_queries, 50, seed=13)
        queries = work / "1x" / "queries.train.tsv"
        figures = {}
        for label, passages in sizes.items():
            command = [str(ROOT / "process_train_queries.py"), "--model", str(model), "--queries", str(queries),
                       "--collection", str(work / label / "collection.tsv"), "--output",
                       str(work / f"run_{label}.parquet"), "--chunk-size", str(args.chunk_size), "--cache-dir",
                       "none", "--device", "cpu", "--no-progress", "--overwrite"]
            rss, seconds = peak_rss_mib([sys.executable, *command])
            figures[label] = {"passages": passages, "peak_rss_mib": rss, "seconds": seconds}
            print(f"{label}: {passages} passages, {args.train_queries} queries: peak RSS {rss:.0f} MiB "
                  f"({seconds:.0f}s)")
    ratio = figures[f"{args.factor}x"]["peak_rss_mib"] / figures["1x"]["peak_rss_mib"]
    print(f"peak RSS {args.factor}x / 1x = {ratio:.3f} (target < 1.3)")
    if args.json:
        args.json.write_text(json.dumps({"arguments": {k: str(v) for k, v in vars(args).items()}, "runs": figures,
                                         "ratio": ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
