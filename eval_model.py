"""Evaluate a model on dev queries: exact top-k over the whole collection, a run file, and metrics.

    python eval_model.py --model out/finetuned --filtered-queries data/msmarco/queries.dev.small.tsv \\
        --collection data/msmarco/collection.tsv --qrels data/msmarco/qrels.dev.small.tsv \\
        --output-dir evaluation-results

Accepts a full model, a LoRA adapter folder (``--merge`` folds the adapter in at load) or a merged
model. Outputs carry the model's label, so several models share one output folder safely:
``<label>.run.parquet`` (or ``.tsv``), ``<label>.trec``, ``<label>.config.json`` and, with ``--qrels``,
``<label>.metrics.json`` plus ``<label>.per_query.parquet`` for report.py. Passage embeddings go to the
shared embedding cache, so a second model only encodes, and a re-run of the same model encodes nothing.
``--resume`` finishes an interrupted search, or does nothing when the outputs are complete and current.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from msmarco_ft import cli
from msmarco_ft.errors import InputError
from msmarco_ft.evaluation import EvalPlan, current_signature, run_evaluation
from msmarco_ft.metrics import QUERIES_FROM
from msmarco_ft.models import DEFAULT_MODEL

log = logging.getLogger("msmarco_ft.eval_model")
MAX_TOP_K = 1000


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name, model folder or LoRA adapter folder")
    parser.add_argument("--filtered-queries", "--queries", dest="queries", default="filtered_queries.dev.tsv",
                        help="queries to search (qid<TAB>text, or Parquet)")
    parser.add_argument("--collection", default="collection.tsv", help="passages (pid<TAB>text, or Parquet)")
    parser.add_argument("--qrels", default=None, help="relevance judgements; when given, metrics are written")
    parser.add_argument("--output-dir", default="./evaluation-results", help="folder for every output")
    parser.add_argument("--top-k", type=int, default=100, help=f"results kept per query (1..{MAX_TOP_K})")
    parser.add_argument("--chunk-size", type=int, default=200_000, help="passages encoded and searched per chunk")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="passages per encoding batch; unset: 512 on GPU, 64 on CPU")
    parser.add_argument("--query-batch-size", type=int, default=None,
                        help="queries per encoding batch; unset: 1024 on GPU, 256 on CPU")
    parser.add_argument("--cache-dir", default="cache", help="embedding cache folder; 'none' disables it")
    parser.add_argument("--max-queries", type=int, default=None,
                        help="search only the first N queries (metrics then use only their qrels)")
    parser.add_argument("--merge", action="store_true", help="merge a LoRA adapter into the base weights at load")
    parser.add_argument("--label", default=None,
                        help="name used in output file names; unset: from --model (plus -merged with --merge)")
    parser.add_argument("--run-format", default="parquet", choices=["parquet", "tsv"], help="run file format")
    parser.add_argument("--queries-from", default="qrels", choices=QUERIES_FROM,
                        help="metric denominator: every qrels query (official) or the run's queries (original)")
    cli.add_device_args(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted search; succeed at once when the outputs are current")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def check_args(args) -> None:
    if not 1 <= args.top_k <= MAX_TOP_K:
        raise InputError(None, f"--top-k must be between 1 and {MAX_TOP_K}, not {args.top_k}")
    for flag in ("chunk_size", "batch_size", "query_batch_size", "max_queries"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InputError(None, f"--{flag.replace('_', '-')} must be at least 1, not {value}")
    for flag in ("queries", "collection", "qrels"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise InputError(path, "no such file")


@cli.script
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    check_args(args)
    plan = EvalPlan.from_args(args)
    if args.resume and plan.is_current(current_signature(args)):
        log.info("%s: outputs are complete and current; nothing to do", plan.label)
        return 0
    if not args.resume:
        cli.refuse_overwrite(plan.outputs(), args.overwrite)
    started = time.perf_counter()
    summary = run_evaluation(args, plan)
    log.info("%s evaluated in %.1f s; outputs in %s", plan.label, time.perf_counter() - started, plan.output_dir)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
