"""MRR@10, MRR@100, Recall@k and nDCG@10 of a run, with the official MS MARCO rules.

    python mrr_calculator.py --qrels qrels.dev.small.tsv --run evaluation-results/all-MiniLM-L6-v2.run.parquet
    python mrr_calculator.py            # the original default file names in the working directory

The run may be TSV with the header ``query_id passage_id rank score``, Parquet, or a TREC run
(``.trec``). With no ``--qrels`` the first of sorted_qrels.dev.tsv, qrels.dev.small.tsv, qrels.dev.tsv
in the working directory is used; with no ``--run``, the newest run in ./evaluation-results/.
The denominator is every query in the qrels (a query missing from the run counts 0);
``--queries-from run`` averages over the run's queries instead, as the original script did.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from msmarco_ft import cli
from msmarco_ft.errors import InputError
from msmarco_ft.formats import read_table
from msmarco_ft.metrics import QUERIES_FROM, check_run, evaluate_run
from msmarco_ft.reporting import PER_QUERY_SUFFIX, per_query_path_for, write_evaluation

log = logging.getLogger("msmarco_ft.mrr_calculator")
DEFAULT_QRELS = ("sorted_qrels.dev.tsv", "qrels.dev.small.tsv", "qrels.dev.tsv")
DEFAULT_RUN_DIR = Path("evaluation-results")
RUN_SUFFIXES = (".parquet", ".tsv", ".trec")


def default_qrels() -> Path:
    for name in DEFAULT_QRELS:
        if Path(name).is_file():
            return Path(name)
    raise InputError(None, f"no --qrels given and none of {', '.join(DEFAULT_QRELS)} in the working directory")


def default_run() -> Path:
    runs = [p for p in DEFAULT_RUN_DIR.glob("*") if p.is_file() and p.suffix in RUN_SUFFIXES
            and not p.name.endswith(PER_QUERY_SUFFIX)] if DEFAULT_RUN_DIR.is_dir() else []
    if not runs:
        raise InputError(DEFAULT_RUN_DIR, "no --run given and no run file (.parquet, .tsv, .trec) in this folder")
    newest = max(runs, key=lambda p: (p.stat().st_mtime, p.name))
    if len(runs) > 1:
        log.info("%d runs in %s: using the newest, %s (pass --run to choose)", len(runs), DEFAULT_RUN_DIR, newest)
    return newest


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--qrels", default=None,
                        help=f"qrels file; unset: the first found of {', '.join(DEFAULT_QRELS)}")
    parser.add_argument("--run", default=None, help=f"run file; unset: the newest run in {DEFAULT_RUN_DIR}/")
    parser.add_argument("--queries-from", default="qrels", choices=QUERIES_FROM,
                        help="denominator: every qrels query (official) or every run query (original project)")
    parser.add_argument("--output", default=None,
                        help="metrics JSON to write (a per-query Parquet is written beside it, for report.py)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def format_table(metrics: dict) -> str:
    rows = [(name, f"{value:.4f}") for name, value in metrics.items() if name != "queries"]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


@cli.script
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    qrels_path = Path(args.qrels) if args.qrels else default_qrels()
    run_path = Path(args.run) if args.run else default_run()
    if args.output:
        cli.refuse_overwrite([args.output, per_query_path_for(args.output)], args.overwrite)
    qrels = read_table(qrels_path, "qrels")
    if not (qrels["rel"].to_numpy() > 0).any():
        raise InputError(qrels_path, "no relevant judgement (rel > 0): nothing to evaluate")
    run = read_table(run_path, "run")
    check_run(run, run_path)
    metrics, per_query = evaluate_run(qrels, run, queries_from=args.queries_from)
    counts = metrics["queries"]
    print(f"qrels: {qrels_path}\nrun:   {run_path}")
    print(f"queries: {counts['qrels']} in qrels, {counts['run']} in run, {counts['both']} in both; "
          f"denominator {counts['evaluated']} (from {args.queries_from})")
    if counts["qrels_only"] or counts["run_only"]:
        log.warning("query sets differ: %d qrels queries have no results (they count 0 with --queries-from "
                    "qrels), %d run queries have no qrels", counts["qrels_only"], counts["run_only"])
    if counts["qrels_without_relevant"]:
        log.warning("%d qrels queries have no relevant passage (rel > 0) and are not evaluated",
                    counts["qrels_without_relevant"])
    print(format_table(metrics))
    if args.output:
        output = Path(args.output)
        write_evaluation(output, metrics, per_query, extra={
            "label": output.name.removesuffix(".json").removesuffix(".metrics"), "run": str(run_path),
            "qrels": str(qrels_path), "queries_from": args.queries_from})
        cli.write_config(output.parent, args, inputs={"qrels": qrels_path, "run": run_path},
                         name=f"{output.name.removesuffix('.json')}.config.json")
        log.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
