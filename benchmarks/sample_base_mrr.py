"""Base model quality and encoding speed on the generated sample: dev MRR@10, exact search, official metric.

  python benchmarks/sample_base_mrr.py                          # generates data/sample when missing
  python benchmarks/sample_base_mrr.py --data data/sample --json out/bench/sample_base_mrr.json

The sample is built so that the base all-MiniLM-L6-v2 leaves room to improve (target band 0.15-0.60);
this script measures where it lands, with the same encoder, exact top-k and MRR@10 as eval_model.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msmarco_ft import cli  # noqa: E402
from msmarco_ft.formats import read_table  # noqa: E402
from msmarco_ft.metrics import evaluate_run  # noqa: E402
from msmarco_ft.models import DEFAULT_MODEL, load_model  # noqa: E402
from msmarco_ft.search import default_batch_sizes, encode_texts, exact_topk, run_frame  # noqa: E402

log = logging.getLogger("sample_base_mrr")
BAND = (0.15, 0.60)


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--data", default="data/sample", help="sample folder; generated with defaults when missing")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or folder")
    parser.add_argument("--split", default="dev.small", choices=["dev.small", "train"], help="which queries")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    cli.add_device_args(parser)
    return parser


@cli.script
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    data = Path(args.data)
    if not (data / "collection.tsv").exists():
        subprocess.run([sys.executable, str(ROOT / "prepare_data.py"), "--sample", str(data)], check=True)
    collection = read_table(data / "collection.tsv", "collection")
    queries = read_table(data / f"queries.{args.split}.tsv", "queries")
    qrels = read_table(data / f"qrels.{args.split}.tsv", "qrels")
    model = load_model(args.model, args.device, args.precision)
    passage_batch, query_batch = default_batch_sizes(str(model.device))
    started = time.perf_counter()
    passages = encode_texts(model, collection["text"].tolist(), passage_batch, progress=True)
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    query_emb = encode_texts(model, queries["text"].tolist(), query_batch)
    query_s = time.perf_counter() - started
    scores, pids = exact_topk(query_emb, passages, collection["pid"].to_numpy(), 100, device=str(model.device))
    metrics, _ = evaluate_run(qrels, run_frame(queries["qid"].to_numpy(), scores, pids))
    words = collection["text"].str.split().str.len()
    result = {
        "data": str(data), "split": args.split, "model": args.model, "device": str(model.device),
        "passages": len(collection), "queries": len(queries), "mean_passage_words": round(float(words.mean()), 1),
        "MRR@10": metrics["MRR@10"], "MRR@100": metrics["MRR@100"], "Recall@10": metrics["Recall@10"],
        "Recall@100": metrics["Recall@100"], "in_target_band": BAND[0] <= metrics["MRR@10"] <= BAND[1],
        "encode_seconds": round(encode_s, 1), "passages_per_second": round(len(collection) / encode_s, 1),
        "queries_per_second": round(len(queries) / query_s, 1),
    }
    print(f"{args.split} MRR@10 {result['MRR@10']:.4f}  MRR@100 {result['MRR@100']:.4f}  "
          f"Recall@100 {result['Recall@100']:.4f}  ({len(queries)} queries, {len(collection)} passages; "
          f"target band {BAND[0]}-{BAND[1]}: {'inside' if result['in_target_band'] else 'OUTSIDE'})")
    print(f"encoding: {result['passages_per_second']} passages/s ({result['mean_passage_words']} words each), "
          f"{result['queries_per_second']} queries/s on {result['device']}")
    if args.json:
        cli.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
