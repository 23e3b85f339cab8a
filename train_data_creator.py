"""Training triplets (query, positive passage, negative passage) for fine-tuning.

    python train_data_creator.py --filtered-queries filtered_queries.train.tsv --qrels sorted_qrels.train.tsv \\
        --random-samples random_samples.tsv --collection collection.tsv --output-dir ./datasets
    python train_data_creator.py ... --random-negatives --output-file triples.train.random.parquet

One triplet per judged positive and negative of each query (``--positives first`` keeps only the
first positive in qrels order). Negatives come from ``--random-samples`` (the hard negatives of
``random_sample.py``) or, with ``--random-negatives``, are drawn uniformly from the collection (seeded,
never a positive of the query): the random-negative baseline. The collection is read once, keeping only
the passages the triplets need. Output is MS MARCO's ``query<TAB>positive<TAB>negative`` TSV, or
Parquet when the file name ends in ``.parquet``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from msmarco_ft import cli
from msmarco_ft.errors import InputError
from msmarco_ft.formats import read_table, write_table
from msmarco_ft.triplets import build_triplets

log = logging.getLogger("train_data_creator")


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--filtered-queries", "--queries", dest="queries", default="filtered_queries.train.tsv",
                        help="train queries (qid<TAB>text, or Parquet)")
    parser.add_argument("--qrels", default="sorted_qrels.train.tsv", help="train qrels (judged positives)")
    parser.add_argument("--random-samples", default=None,
                        help="negatives from random_sample.py (default random_samples.tsv unless --random-negatives)")
    parser.add_argument("--collection", default="collection.tsv", help="passages (pid<TAB>text, or Parquet)")
    parser.add_argument("--output-dir", default="./datasets", help="output folder")
    parser.add_argument("--output-file", default="triples.train.hard_negatives.tsv",
                        help="output name (.tsv, or .parquet for Parquet)")
    parser.add_argument("--chunk-size", type=int, default=200_000, help="collection rows read per chunk")
    parser.add_argument("--positives", choices=["first", "all"], default="all",
                        help="all: one triplet per judged positive; first: only the first in qrels order")
    parser.add_argument("--random-negatives", action="store_true",
                        help="draw negatives uniformly from the collection instead of --random-samples")
    parser.add_argument("--negatives-per-query", type=int, default=1, help="random negatives per query")
    parser.add_argument("--seed", type=int, default=42, help="random seed (random negatives)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--resume", action="store_true",
                        help="succeed at once when the output is complete and current (this stage is one pass)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


@cli.script
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    if args.chunk_size < 1 or args.negatives_per_query < 1:
        parser.error("--chunk-size and --negatives-per-query must be at least 1")
    if args.random_negatives and args.random_samples:
        log.warning("--random-negatives given: ignoring --random-samples %s", args.random_samples)
        args.random_samples = None
    if not args.random_negatives and not args.random_samples:
        args.random_samples = "random_samples.tsv"

    output = Path(args.output_dir) / args.output_file
    config_path = output.with_name(output.name + ".config.json")
    inputs = {"queries": args.queries, "qrels": args.qrels, "random_samples": args.random_samples,
              "collection": args.collection}
    expected = cli.signature(args, inputs)
    if output.exists() and args.resume and cli.is_current(config_path, expected):
        log.info("%s is complete and current: nothing to do", output)
        return 0
    cli.refuse_overwrite([output], args.overwrite)

    queries = read_table(args.queries, "queries")
    qrels = read_table(args.qrels, "qrels")
    negatives = read_table(args.random_samples, "negatives") if args.random_samples else None
    triplets, stats = build_triplets(queries, qrels, args.collection, negatives=negatives, positives=args.positives,
                                     random_negatives=args.random_negatives,
                                     negatives_per_query=args.negatives_per_query, seed=args.seed,
                                     chunk_rows=args.chunk_size)
    if not len(triplets):
        raise InputError(args.random_samples or args.qrels, "no triplets: no query has both a judged positive "
                                                            "and a negative")
    write_table(triplets, output, "triplets")
    cli.write_config(output.parent, args, inputs=inputs, name=config_path.name,
                     extra={"signature": expected, "summary": stats, "outputs": [output.name]})
    dropped = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in stats.items() if k.startswith("dropped_"))
    log.info("%d triplets from %d of %d queries (%s negatives) -> %s; dropped: %s", stats["triplets"],
             stats["queries_in_triplets"], stats["queries"], "random" if args.random_negatives else "hard",
             output, dropped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
