"""Base-model top-k of the train queries over the whole collection: the run hard negatives are drawn from.

    python process_train_queries.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --filtered-queries filtered_queries.train.tsv --collection collection.tsv --qrels qrels.train.tsv
    python process_train_queries.py ... --resume      # continue a killed run; no-op when the output is current

The collection streams in chunks of ``--chunk-size`` passages; each chunk is encoded (or read from the
embedding cache in ``--cache-dir``) and scored against every query, and an exact running top-k per
query absorbs it. Memory is O(queries x k + chunk), whatever the collection's size. After every chunk
the running top-k is saved in ``<output>.state/``; ``--resume`` continues from there and ends with the
same output as an uninterrupted run. With ``--qrels``, the scores of the judged positives are written
next to the run (``<run>.positive_scores.parquet``) for the margin filter of ``random_sample.py``.
Encoding batches default to 512 passages / 1024 queries on GPU and 64 / 256 on CPU.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from msmarco_ft import cli
from msmarco_ft.errors import InputError
from msmarco_ft.formats import read_table, write_table, write_trec
from msmarco_ft.models import DEFAULT_MODEL, load_model, model_label
from msmarco_ft.negatives import positive_scores_path
from msmarco_ft.search import clear_state, default_batch_sizes, search_collection

log = logging.getLogger("process_train_queries")


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model: hub name, folder or LoRA adapter folder")
    parser.add_argument("--filtered-queries", "--queries", dest="queries", default="filtered_queries.train.tsv",
                        help="train queries (qid<TAB>text, or Parquet)")
    parser.add_argument("--collection", default="collection.tsv", help="passages (pid<TAB>text, or Parquet)")
    parser.add_argument("--qrels", default=None,
                        help="train qrels: also record each judged positive's score (for random_sample --margin)")
    parser.add_argument("--output-dir", default="./results", help="folder for the run when --output is not given")
    parser.add_argument("--output", default=None,
                        help="run file (.parquet, .tsv or .trec); default: "
                             "OUTPUT_DIR/base_model_train_top{K}_results.parquet")
    parser.add_argument("--final-k", "--top-k", dest="top_k", type=int, default=200, help="passages kept per query")
    parser.add_argument("--chunk-size", type=int, default=200_000, help="passages encoded and searched per chunk")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="passage encoding batch; default 512 on GPU, 64 on CPU")
    parser.add_argument("--query-batch-size", type=int, default=None,
                        help="query encoding batch; default 1024 on GPU, 256 on CPU")
    parser.add_argument("--cache-dir", default="./cache", help="embedding cache folder ('none' to disable)")
    parser.add_argument("--max-seq-length", type=int, default=None, help="truncate texts to this many tokens")
    cli.add_device_args(parser)
    parser.add_argument("--max-queries", type=int, default=None, help="search only the first N queries")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run; succeed at once when the output is complete and current")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def output_path(args) -> Path:
    if args.output:
        return Path(args.output)
    return Path(args.output_dir) / f"base_model_train_top{args.top_k}_results.parquet"


@cli.script
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    for flag in ("top_k", "chunk_size", "batch_size", "query_batch_size", "max_queries", "max_seq_length"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")

    output = output_path(args)
    args.output = str(output)
    sidecar = positive_scores_path(output) if args.qrels else None
    config_path = output.with_name(output.name + ".config.json")
    state_dir = output.with_name(output.name + ".state")
    outputs = [p for p in (output, sidecar) if p is not None]
    inputs = {"model": args.model, "queries": args.queries, "collection": args.collection, "qrels": args.qrels}
    expected = cli.signature(args, inputs)
    if all(p.exists() for p in outputs) and args.resume and cli.is_current(config_path, expected):
        log.info("%s is complete and current: nothing to do", output)
        return 0
    if not args.overwrite:
        for path in outputs:
            if path.exists():
                hint = " and was made from other arguments or inputs" if args.resume else ""
                raise InputError(path, f"already exists{hint}; pass --overwrite to replace it")
        if state_dir.exists() and not args.resume:
            raise InputError(state_dir, "holds an interrupted run; pass --resume to continue it or --overwrite "
                                        "to start over")
    if args.overwrite:
        clear_state(state_dir)

    queries = read_table(args.queries, "queries")
    if args.max_queries:
        queries = queries.head(args.max_queries)
    qrels = read_table(args.qrels, "qrels") if args.qrels else None
    model = load_model(args.model, args.device, args.precision, max_seq_length=args.max_seq_length)
    device = "cuda" if model.device.type == "cuda" else "cpu"
    batch_size, query_batch_size = default_batch_sizes(device)
    cache_dir = None if str(args.cache_dir).lower() == "none" else args.cache_dir
    result = search_collection(model, queries[["qid", "text"]], args.collection, top_k=args.top_k,
                               chunk_size=args.chunk_size, batch_size=args.batch_size or batch_size,
                               query_batch_size=args.query_batch_size or query_batch_size, cache_dir=cache_dir,
                               state_dir=state_dir, resume=args.resume, qrels=qrels,
                               progress=not args.no_progress)

    if output.suffix.lower() == ".trec":
        write_trec(result.run, output, model_label(args.model))
    else:
        write_table(result.run, output, "run")
    if sidecar is not None:
        write_table(result.positive_scores, sidecar, "positive_scores")
    stats = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.stats.items()}
    cli.write_config(output.parent, args, inputs=inputs, name=config_path.name,
                     extra={"signature": expected, "stats": stats, "outputs": [p.name for p in outputs]})
    positives = f", {stats['positives_found']} positive scores" if sidecar is not None else ""
    log.info("top-%d of %d queries over %d passages (%d chunks: %d passages encoded, %d chunks from cache) in "
             "%.1fs -> %s%s", args.top_k, stats["queries"], stats["passages_searched"], stats["chunks"],
             stats["encoded"], stats["cache_hits"], stats["seconds"], output, positives)
    return 0


if __name__ == "__main__":
    sys.exit(main())
