"""Fine-tune a dense retriever on (query, positive, negative) triplets, and keep it only if it retrieves better.

Retrieval MRR@10 is measured before training (the base) and every --eval-steps; the best evaluation is
saved as OUT/model (a LoRA adapter folder with --lora). When no evaluation beats the base, the run says
so and exits with status 3 unless --allow-regression. Without --eval-*, --val-queries queries of the
triplets file are held out (none of their triplets are trained on) and retrieved among its passages.

  # CPU, full fine-tuning on mined hard-negative triplets
  python finetune.py --train-file data/sample/triplets.hard.tsv --output-dir out/ft-full
  # LoRA, plus a merged copy that runs at base speed
  python finetune.py --train-file data/sample/triplets.hard.tsv --output-dir out/ft-lora --lora --merge
  # one GPU, big in-batch-negative batches
  python finetune.py --train-file triplets.parquet --output-dir out/ft --loss cached-mnrl --batch-size 512
  # several GPUs (DDP; MNRL gathers in-batch negatives across devices)
  torchrun --nproc_per_node 4 finetune.py --train-file triplets.parquet --output-dir out/ft --batch-size 256

Writes OUT/model (or adapter; with --merge also OUT/merged), config.json, train_log.csv, loss_curve.png,
eval_history.json, README.md (model card) and result.json.
"""

from __future__ import annotations

import argparse
import sys

from msmarco_ft import cli
from msmarco_ft.models import DEFAULT_MODEL
from msmarco_ft.training import LOSSES


def steps_or_share(text: str) -> float:
    """A step count (>= 1) or a share of all training steps (between 0 and 1), as the HF trainer takes."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    if value >= 1:
        if value != int(value):
            raise argparse.ArgumentTypeError("a step count must be a whole number")
        return int(value)
    return value


def share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be in [0, 1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser_for(__doc__)
    data = parser.add_argument_group("data")
    data.add_argument("--train-file", required=True, help="triplets (query, positive, negative), TSV or Parquet")
    data.add_argument("--eval-queries", help="queries to evaluate retrieval on (with --eval-qrels/--eval-collection)")
    data.add_argument("--eval-qrels", help="relevance judgements for --eval-queries")
    data.add_argument("--eval-collection", help="passages to retrieve from during evaluation (held in memory)")
    data.add_argument("--val-queries", type=int, default=200,
                      help="without --eval-*: distinct queries held out of the triplets for validation")
    data.add_argument("--val-max-passages", type=int, default=4000,
                      help="without --eval-*: passages to retrieve among (the held-out queries' positives and "
                           "negatives, topped up with other passages of the file)")

    model = parser.add_argument_group("model and loss")
    model.add_argument("--model", default=DEFAULT_MODEL, help="base model: hub name or folder")
    model.add_argument("--loss", default="mnrl", choices=LOSSES,
                       help="mnrl: hard negative plus in-batch negatives; cached-mnrl: the same with big batches "
                            "in small memory; triplet: cosine distance, margin 0.2")
    model.add_argument("--mini-batch-size", type=int, default=32, help="cached-mnrl: texts per forward pass")
    model.add_argument("--max-seq-length", type=int, default=None, help="default: the base model's own")
    model.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights")
    model.add_argument("--lora-r", type=int, default=16, help="LoRA rank")
    model.add_argument("--lora-alpha", type=int, default=32, help="LoRA scaling alpha")
    model.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout")
    model.add_argument("--lora-targets", nargs="+", default=["query", "value"], help="modules LoRA adapts")
    model.add_argument("--merge", action="store_true",
                       help="with --lora: also save OUT/merged, the adapter folded into the base weights")

    train = parser.add_argument_group("training")
    train.add_argument("--output-dir", required=True, help="folder for the model, curves and reports")
    train.add_argument("--epochs", type=float, default=1, help="passes over the triplets (unless --max-steps)")
    train.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: --epochs decides)")
    train.add_argument("--batch-size", type=int, default=None,
                       help="triplets per step and device; default 64 on CPU, 256 on GPU (512+ with cached-mnrl)")
    train.add_argument("--lr", type=float, default=None, help="learning rate; default 2e-5 full, 1e-4 LoRA")
    train.add_argument("--warmup-ratio", type=share, default=0.1, help="share of steps with linear warm-up")
    train.add_argument("--seed", type=int, default=42, help="seed for training order and the validation split")
    train.add_argument("--eval-steps", type=steps_or_share, default=0.25,
                       help="evaluate every N steps (or a share of all steps when below 1)")
    train.add_argument("--save-steps", type=steps_or_share, default=0.25,
                       help="write a resumable checkpoint every N steps (or a share when below 1)")
    train.add_argument("--logging-steps", type=steps_or_share, default=0.02,
                       help="log loss and learning rate every N steps (or a share when below 1)")
    train.add_argument("--eval-batch-size", type=int, default=None, help="encoding batch; default 64 CPU, 256 GPU")
    train.add_argument("--allow-regression", action="store_true",
                       help="exit 0 and keep the model even when it does not beat the base")
    train.add_argument("--resume", action="store_true",
                       help="continue from the last checkpoint in --output-dir (a finished run: nothing to do)")
    train.add_argument("--overwrite", action="store_true", help="replace a previous run in --output-dir")
    cli.add_device_args(parser)

    track = parser.add_argument_group("tracking")
    track.add_argument("--wandb-project", default="msmarco-ft", help="W&B project (offline when no WANDB_API_KEY)")
    track.add_argument("--run-name", default=None, help="W&B run name")
    track.add_argument("--no-wandb", action="store_true", help="no W&B; the local curves are written anyway")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


@cli.script
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    from msmarco_ft.training import finetune

    return finetune(args)


if __name__ == "__main__":
    sys.exit(main())
