"""Compare models against a baseline and say whether each difference is real.

    python report.py --baseline evaluation-results/all-MiniLM-L6-v2.metrics.json \\
        --metrics evaluation-results/finetuned.metrics.json evaluation-results/lora-merged.metrics.json \\
        --latency results/latency/all-MiniLM-L6-v2.json results/latency/finetuned.json \\
        --output-dir report

Reads metrics.json files from eval_model.py or mrr_calculator.py --output (or folders holding one)
and their per-query tables. Writes report.md, report.json and metrics.png: per model MRR@10, MRR@100,
Recall@100 and nDCG@10 with a 95% bootstrap interval over queries, and the paired difference to the
baseline with a p-value from a paired randomization (sign-flip) test on per-query scores. Latency
files are matched to models by their model label (else by position); ``--loss-curves`` and
``--pictures`` embed images in report.md (a missing image is skipped with a warning).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from msmarco_ft import cli
from msmarco_ft.errors import InputError
from msmarco_ft.formats import atomic_output
from msmarco_ft.reporting import (
    attach_latency,
    bar_chart,
    compare,
    load_evaluation,
    render_markdown,
    table_rows,
    text_table,
    verdict_lines,
)
from msmarco_ft.stats import CONFIDENCE, N_RESAMPLES, SEED

log = logging.getLogger("msmarco_ft.report")
CHART = "metrics.png"


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--baseline", required=True, help="the baseline's metrics.json (or its folder)")
    parser.add_argument("--metrics", nargs="+", default=[], help="metrics.json files (or folders) to compare")
    parser.add_argument("--names", nargs="+", default=None,
                        help="display names, one per --metrics file (optionally the baseline's first)")
    parser.add_argument("--latency", nargs="+", default=[], help="latency JSON files from inference_times*.py")
    parser.add_argument("--loss-curves", nargs="+", default=[], help="loss-curve PNGs to embed in report.md")
    parser.add_argument("--pictures", nargs="+", default=[], help="other PNGs (e.g. UMAP) to embed in report.md")
    parser.add_argument("--output-dir", default="report", help="folder for report.md, report.json and the chart")
    parser.add_argument("--resamples", type=int, default=N_RESAMPLES,
                        help="bootstrap resamples and randomization-test permutations")
    parser.add_argument("--confidence", type=float, default=CONFIDENCE, help="confidence level of the intervals")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level for the verdict")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed for resampling")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def check_args(args) -> None:
    if args.names is not None and len(args.names) not in (len(args.metrics), 1 + len(args.metrics)):
        raise InputError(None, f"--names needs one name per --metrics file ({len(args.metrics)}), or one more "
                               f"for the baseline first; got {len(args.names)}")
    if args.resamples < 100:
        raise InputError(None, f"--resamples must be at least 100, not {args.resamples}")
    if not 0 < args.confidence < 1 or not 0 < args.alpha < 1:
        raise InputError(None, "--confidence and --alpha must be between 0 and 1")


def existing_images(paths: list) -> list:
    """Pictures decorate the report: a missing one is reported and skipped, not fatal."""
    for path in paths:
        if not Path(path).is_file():
            log.warning("%s: no such image; left out of the report", path)
    return [p for p in paths if Path(p).is_file()]


@cli.script
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    check_args(args)
    out = Path(args.output_dir)
    cli.refuse_overwrite([out / "report.md", out / "report.json", out / CHART], args.overwrite)
    names = args.names or []
    names = [None] * (1 + len(args.metrics) - len(names)) + names  # without a name the baseline keeps its label
    evaluations = [load_evaluation(path, name) for path, name in zip([args.baseline, *args.metrics], names)]
    seen = set()
    for evaluation in evaluations:
        if evaluation.name in seen:
            raise InputError(evaluation.path, f"two models are named {evaluation.name!r}; pass --names")
        seen.add(evaluation.name)
    latency = attach_latency(evaluations, args.latency)
    result = compare(evaluations[0], evaluations[1:], n_resamples=args.resamples, confidence=args.confidence,
                     seed=args.seed, alpha=args.alpha)
    for model in result["models"]:
        model["latency"] = latency.get(model["name"], {})

    out.mkdir(parents=True, exist_ok=True)
    bar_chart(result, out / CHART)
    markdown = render_markdown(result, latency, CHART, out, existing_images(args.loss_curves),
                               existing_images(args.pictures))
    cli.write_json(out / "report.json", result)
    with atomic_output(out / "report.md") as tmp:
        tmp.write_text(markdown)
    cli.write_config(out, args, inputs={f"metrics_{i}": e.path for i, e in enumerate(evaluations)})
    print(text_table(*table_rows(result, latency)))
    print("\n".join(line.replace("**", "") for line in verdict_lines(result)))
    log.info("wrote %s", out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
