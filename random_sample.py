"""Hard negatives: draw passages from ranks 50-200 of the base model's run, never a judged positive.

    python random_sample.py          # in a folder with base_model_train_top200_results.* and sorted_qrels.train.tsv
    python random_sample.py --run results/base_model_train_top200_results.parquet \\
        --qrels qrels.train.tsv --output random_samples.tsv --margin 0.05

Without arguments it reads ``base_model_train_top200_results.parquet`` (or ``.tsv``/``.trec``) and
``sorted_qrels.train.tsv`` from the working directory and writes ``random_samples.tsv``
(``query_id  passage_id  rank``). ``--margin``/``--relative-margin`` drop likely false negatives using
the positives' scores that ``process_train_queries.py --qrels`` writes next to the run. Counts of
everything dropped, and of queries left with no candidate, go to the log and ``<output>.config.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from msmarco_ft import cli
from msmarco_ft.errors import InputError
from msmarco_ft.formats import read_table, write_table
from msmarco_ft.negatives import positive_scores_path, sample_negatives

log = logging.getLogger("random_sample")
DEFAULT_RUN = "base_model_train_top200_results"
RUN_SUFFIXES = (".parquet", ".tsv", ".trec")


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--run", help=f"mined run; default: {DEFAULT_RUN}.parquet|.tsv|.trec in the working folder")
    parser.add_argument("--qrels", default="sorted_qrels.train.tsv", help="train qrels (judged positives)")
    parser.add_argument("--output", default="random_samples.tsv", help="negatives file (.tsv or .parquet)")
    parser.add_argument("--rank-min", type=int, default=50, help="best rank a negative may have (1-based, inclusive)")
    parser.add_argument("--rank-max", type=int, default=200, help="worst rank a negative may have (inclusive)")
    parser.add_argument("--negatives-per-query", type=int, default=1, help="negatives drawn per query")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--margin", type=float, default=None,
                        help="drop candidates scoring above (lowest positive score - MARGIN)")
    parser.add_argument("--relative-margin", type=float, default=None,
                        help="drop candidates scoring above (1 - R) * lowest positive score")
    parser.add_argument("--positive-scores", default=None,
                        help="positives' scores; default: the .positive_scores file next to --run")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--resume", action="store_true",
                        help="succeed at once when the output is complete and current (this stage is one pass)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def find_run(given: str | None) -> Path:
    if given:
        return Path(given)
    for suffix in RUN_SUFFIXES:
        if Path(DEFAULT_RUN + suffix).exists():
            return Path(DEFAULT_RUN + suffix)
    raise InputError(DEFAULT_RUN + ".parquet", "no such file (nor .tsv/.trec); pass --run")


@cli.script
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    if args.rank_min < 1 or args.rank_max < args.rank_min:
        parser.error("need 1 <= --rank-min <= --rank-max")
    if args.negatives_per_query < 1:
        parser.error("--negatives-per-query must be at least 1")
    if args.margin is not None and args.margin < 0:
        parser.error("--margin must not be negative")
    if args.relative_margin is not None and not 0 <= args.relative_margin < 1:
        parser.error("--relative-margin must lie in [0, 1)")

    run_path = find_run(args.run)
    args.run = str(run_path)
    output = Path(args.output)
    config_path = output.with_name(output.name + ".config.json")
    margins = args.margin is not None or args.relative_margin is not None
    scores_path = Path(args.positive_scores) if args.positive_scores else positive_scores_path(run_path)
    if margins and not scores_path.exists():
        raise InputError(scores_path, "no such file: --margin/--relative-margin need the positive scores written "
                                      "by process_train_queries.py --qrels (or pass --positive-scores)")
    inputs = {"run": run_path, "qrels": args.qrels, "positive_scores": scores_path if margins else None}
    expected = cli.signature(args, inputs)
    if output.exists() and args.resume and cli.is_current(config_path, expected):
        log.info("%s is complete and current: nothing to do", output)
        return 0
    cli.refuse_overwrite([output], args.overwrite)

    run = read_table(run_path, "run")
    qrels = read_table(args.qrels, "qrels")
    positive_scores = read_table(scores_path, "positive_scores") if margins else None
    negatives, stats = sample_negatives(run, qrels, rank_min=args.rank_min, rank_max=args.rank_max,
                                        per_query=args.negatives_per_query, seed=args.seed,
                                        positive_scores=positive_scores, margin=args.margin,
                                        relative_margin=args.relative_margin)
    if not len(negatives):
        raise InputError(run_path, f"no candidate left in ranks {args.rank_min}-{args.rank_max} of any query")
    write_table(negatives, output, "negatives")
    cli.write_config(output.parent, args, inputs=inputs, name=config_path.name,
                     extra={"signature": expected, "summary": stats, "outputs": [output.name]})
    dropped = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in stats.items() if k.startswith("dropped_"))
    log.info("%d negatives for %d of %d queries (ranks %d-%d) -> %s; dropped: %s; %d queries left without a "
             "candidate", stats["negatives"], stats["queries_with_negatives"], stats["queries_in_run"],
             args.rank_min, args.rank_max, output, dropped, stats["queries_without_candidate"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
