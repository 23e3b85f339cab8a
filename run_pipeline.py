"""The whole flow on one dataset: the original five-model experiment, ending in a report.

    python run_pipeline.py --data data/sample --out out/demo            # what `make demo` runs
    python run_pipeline.py --data data/sample --out out/quick --quick   # CI-sized smoke run

Stages: prepare the sample; evaluate the base model; mine the train queries (top-200); sample hard
negatives (ranks 50-200); build hard-negative and random-negative triplets; fine-tune full and LoRA on
each (LoRA merged); evaluate all five on the dev queries; cross-check one run with mrr_calculator.py;
time the base and the LoRA models; draw the UMAP comparison; write report.md. Every stage is skipped
when its outputs are complete and current, and an interrupted stage resumes, so a second run takes
seconds and a killed one continues where it stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from msmarco_ft import cli
from msmarco_ft.models import DEFAULT_MODEL
from msmarco_ft.pipeline import Runner, Stage, StageFailed

ROOT = Path(__file__).resolve().parent
RECIPES = ("full-hard", "full-random", "lora-hard", "lora-random")
# Sample sizes and training budgets: the full demo fits 20 minutes on a 2-core CPU; --quick is a smoke run.
SIZES = {
    False: {"sample": [], "train": ["--max-steps", "40", "--eval-steps", "20", "--batch-size", "32",
                                    "--val-max-passages", "1000"], "latency_queries": "32",
            "umap_queries": "60"},
    True: {"sample": ["--passages", "600", "--train-queries", "120", "--dev-queries", "40"],
           "train": ["--max-steps", "4", "--eval-steps", "2", "--batch-size", "8", "--val-queries", "16",
                     "--allow-regression"],
           "latency_queries": "16", "umap_queries": "12"},
}


def build_parser():
    parser = cli.parser_for(__doc__)
    parser.add_argument("--data", default="data/sample", help="dataset folder (generated when missing)")
    parser.add_argument("--out", default="out/demo", help="folder for every stage's outputs")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a few training steps (CI smoke run)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log fine-tuning to Weights & Biases")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def plan(args) -> list[Stage]:
    data, out = Path(args.data), Path(args.out)
    sizes = SIZES[args.quick]
    collection = data / "collection.tsv"
    dev_q, dev_qrels = data / "queries.dev.small.tsv", data / "qrels.dev.small.tsv"
    train_q, train_qrels = data / "queries.train.tsv", data / "qrels.train.tsv"
    cache, evals, mining = out / "cache", out / "eval", out / "mining"
    device = ["--device", args.device]
    run_file = mining / "base_model_train_top200_results.parquet"
    negatives = mining / "random_samples.tsv"
    triplets = {"hard": out / "triplets" / "hard.parquet", "random": out / "triplets" / "random.parquet"}

    stages = [Stage("prepare", "prepare_data.py", ["--sample", str(data), *sizes["sample"]],
                    outputs=[collection, dev_q, dev_qrels, train_q, train_qrels])]

    def evaluate(label: str, model: str, extra: list[str] = ()) -> Stage:
        return Stage(f"eval-{label}", "eval_model.py",
                     ["--model", model, "--label", label, "--filtered-queries", str(dev_q), "--collection",
                      str(collection), "--qrels", str(dev_qrels), "--output-dir", str(evals), "--cache-dir",
                      str(cache), "--resume", "--no-progress", *device, *extra],
                     inputs=[dev_q, dev_qrels, collection] + ([Path(model)] if Path(model).exists() else []),
                     outputs=[evals / f"{label}.metrics.json"])

    stages.append(evaluate("base", args.model))
    stages.append(Stage("mine", "process_train_queries.py",
                        ["--model", args.model, "--filtered-queries", str(train_q), "--collection", str(collection),
                         "--qrels", str(train_qrels), "--output", str(run_file), "--cache-dir", str(cache),
                         "--resume", *device],
                        inputs=[train_q, train_qrels, collection], outputs=[run_file]))
    stages.append(Stage("negatives", "random_sample.py",
                        ["--run", str(run_file), "--qrels", str(train_qrels), "--output", str(negatives),
                         "--overwrite"],
                        inputs=[run_file, train_qrels], outputs=[negatives]))
    common = ["--filtered-queries", str(train_q), "--qrels", str(train_qrels), "--collection", str(collection),
              "--overwrite"]
    stages.append(Stage("triplets-hard", "train_data_creator.py",
                        [*common, "--random-samples", str(negatives), "--output-dir", str(triplets["hard"].parent),
                         "--output-file", triplets["hard"].name],
                        inputs=[train_q, train_qrels, collection, negatives], outputs=[triplets["hard"]]))
    stages.append(Stage("triplets-random", "train_data_creator.py",
                        [*common, "--random-negatives", "--output-dir", str(triplets["random"].parent),
                         "--output-file", triplets["random"].name],
                        inputs=[train_q, train_qrels, collection], outputs=[triplets["random"]]))
    for recipe in RECIPES:
        kind, negs = recipe.split("-")
        model_dir = out / "models" / recipe
        # LoRA trains a few thousand weights instead of 22M: a short budget needs a higher learning rate.
        lora = ["--lora", "--merge", "--lr", "5e-4"] if kind == "lora" else []
        wandb = ["--no-wandb"] if args.no_wandb else ["--run-name", f"demo-{recipe}"]
        stages.append(Stage(f"finetune-{recipe}", "finetune.py",
                            ["--model", args.model, "--train-file", str(triplets[negs]), "--output-dir",
                             str(model_dir), "--resume", *lora, *sizes["train"], *wandb, *device],
                            inputs=[triplets[negs]], outputs=[model_dir / "result.json"]))
        stages.append(evaluate(recipe, str(model_dir / ("merged" if kind == "lora" else "model"))))
    stages.append(Stage("mrr-crosscheck", "mrr_calculator.py",
                        ["--qrels", str(dev_qrels), "--run", str(evals / "lora-hard.trec"), "--output",
                         str(evals / "crosscheck.lora-hard.json"), "--overwrite"],
                        inputs=[dev_qrels, evals / "lora-hard.trec"], outputs=[evals / "crosscheck.lora-hard.json"]))
    latency = ["--filtered-queries", str(dev_q), "--collection", str(collection), "--num-queries",
               sizes["latency_queries"], "--batch-sizes", "1,8,32", "--repeats", "2", "--cache-dir", str(cache),
               "--throughput-passages", "64", "--warmup", "1", "--threads", "1", "--overwrite", *device]
    stages.append(Stage("latency-base", "inference_times.py",
                        ["--model", args.model, *latency, "--output", str(out / "latency" / "base.json")],
                        inputs=[dev_q, collection], outputs=[out / "latency" / "base.json"]))
    stages.append(Stage("latency-lora", "inference_times_lora.py",
                        ["--model", str(out / "models" / "lora-hard"), "--base-model", args.model, *latency,
                         "--output", str(out / "latency" / "lora-hard.json")],
                        inputs=[dev_q, collection, out / "models" / "lora-hard"],
                        outputs=[out / "latency" / "lora-hard.json"]))
    umap_dir = out / "umap"
    stages.append(Stage("umap", "visualize.py",
                        ["--models", args.model, str(out / "models" / "full-hard" / "model"),
                         "--names", "base", "full-hard",
                         "--queries", str(dev_q), "--collection", str(collection), "--qrels", str(dev_qrels),
                         "--run", str(evals / "base.run.parquet"), "--num-queries", sizes["umap_queries"],
                         "--output-dir", str(umap_dir), "--overwrite", *device],
                        inputs=[dev_q, collection, out / "models" / "full-hard"],
                        outputs=[umap_dir / "comparison.png"]))
    labels = ["base", *RECIPES]
    stages.append(Stage("report", "report.py",
                        ["--baseline", str(evals / "base.metrics.json"), "--metrics",
                         *[str(evals / f"{label}.metrics.json") for label in RECIPES],
                         "--names", *RECIPES,
                         "--latency", str(out / "latency" / "base.json"), str(out / "latency" / "lora-hard.json"),
                         "--loss-curves", *[str(out / "models" / r / "loss_curve.png") for r in RECIPES],
                         "--pictures", str(umap_dir / "comparison.png"),
                         "--output-dir", str(out / "report"), "--overwrite"],
                        inputs=[evals / f"{label}.metrics.json" for label in labels],
                        outputs=[out / "report" / "report.md"]))
    return stages


@cli.script
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(ROOT, out / ".stages")
    try:
        for stage in plan(args):
            runner.run(stage)
    except StageFailed as failed:
        print(f"error: {failed}; fix it and run the same command again to continue", file=sys.stderr)
        return failed.code
    finally:
        cli.write_json(out / "pipeline.json", {"arguments": vars(args), "stages": runner.timings})
    total = sum(t["seconds"] for t in runner.timings.values())
    report = out / "report" / "report.md"
    print(report.read_text() if report.exists() else "")
    print(f"pipeline finished in {total:.0f} s; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
