"""Prepare an MS MARCO-layout data folder: the generated sample, the real MS MARCO, or a folder you have.

  python prepare_data.py --sample data/sample                 # generated sample, default size, seconds
  python prepare_data.py --sample data/big --passages 2000000 --train-queries 50000 --dev-queries 5000
  python prepare_data.py --msmarco data/msmarco               # download (resumable) + extract, ~1 GB
  python prepare_data.py --from-dir path/to/msmarco           # only write the filtered/sorted files

Every mode ends with the files the original scripts expect beside the MS MARCO files:
filtered_queries.{train,dev}.tsv (queries that have qrels) and sorted_qrels.{train,dev}.tsv (by qid).
A folder that is already up to date for the same arguments is left alone.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from msmarco_ft import cli
from msmarco_ft.errors import InputError
from msmarco_ft.msmarco import (
    CONNECT_TIMEOUT,
    OFFICIAL_URL,
    count_rows,
    derived_files,
    fetch_msmarco,
    filter_and_sort,
    summary_table,
)
from msmarco_ft.sample import FILES, write_sample

log = logging.getLogger("prepare_data")


def build_parser():
    parser = cli.parser_for(__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sample", metavar="OUT_DIR", help="write the generated sample dataset here")
    mode.add_argument("--msmarco", metavar="OUT_DIR", help="download and extract the real MS MARCO passage files here")
    mode.add_argument("--from-dir", metavar="DIR", help="only filter/sort this MS MARCO-layout folder")
    parser.add_argument("--passages", type=int, default=6000, help="sample: passages in the collection")
    parser.add_argument("--train-queries", type=int, default=1500, help="sample: training queries")
    parser.add_argument("--dev-queries", type=int, default=600, help="sample: dev queries (disjoint entities)")
    parser.add_argument("--seed", type=int, default=13, help="sample: seed; the same seed gives identical bytes")
    parser.add_argument("--url", default=OFFICIAL_URL, help="msmarco: where collectionandqueries.tar.gz lives")
    parser.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT, help="msmarco: network timeout, seconds")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even when the folder is up to date")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _settings(args) -> dict:
    """The arguments that decide the folder's contents; a folder made with the same ones is current."""
    if args.sample:
        return {"mode": "sample", "passages": args.passages, "train_queries": args.train_queries,
                "dev_queries": args.dev_queries, "seed": args.seed}
    if args.msmarco:
        return {"mode": "msmarco", "url": args.url}
    return {"mode": "from-dir"}


def _up_to_date(out_dir: Path, settings: dict, outputs: list[str]) -> dict | None:
    config_path = out_dir / "config.json"
    if not config_path.exists() or not all((out_dir / name).exists() for name in outputs):
        return None
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError:
        return None
    if config.get("settings") != settings:
        return None
    return config.get("counts")


@cli.script
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    out_dir = Path(args.sample or args.msmarco or args.from_dir)
    settings = _settings(args)
    outputs = (list(FILES) if args.sample else []) + derived_files()
    counts = None if args.overwrite else _up_to_date(out_dir, settings, outputs)
    if counts is not None:
        log.info("%s is up to date for these arguments; nothing to do (--overwrite regenerates)", out_dir)
        print(summary_table(counts))
        return 0
    if args.sample:
        for value, flag in ((args.train_queries, "--train-queries"), (args.dev_queries, "--dev-queries")):
            if value < 1:
                raise InputError(None, f"{flag} must be at least 1, got {value}")
    if not args.msmarco:  # a download resumes instead: its .part file and extracted files are its state
        cli.refuse_overwrite([out_dir / name for name in outputs], args.overwrite)
    started = time.perf_counter()
    if args.sample:
        counts = write_sample(out_dir, args.passages, args.train_queries, args.dev_queries, args.seed)
        counts.update(filter_and_sort(out_dir))
    elif args.msmarco:
        counts = fetch_msmarco(out_dir, args.url, timeout=args.timeout, progress=not args.no_progress)
        counts["passages"] = count_rows(out_dir / "collection.tsv")
    else:
        counts = filter_and_sort(out_dir)
        counts["passages"] = count_rows(out_dir / "collection.tsv")
    cli.write_config(out_dir, args, extra={"settings": settings, "counts": counts})
    log.info("wrote %s in %.1f s", out_dir, time.perf_counter() - started)
    print(summary_table(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
