"""Fine-tuning with sentence-transformers' trainer, guarded so that the saved model never loses to its base.

The trainer, samplers, losses, LoRA (peft), checkpoints, resume and W&B logging are the libraries' own.
Written here is only what they lack: a retrieval evaluator that scores MRR@10 with the shared search and
metric code (so the number matches eval_model.py), the guard that keeps the best evaluation as the model,
a validation slice carved from a triplets file, the similarity pre-flight check and the local curves.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import TrainerCallback

from .cli import write_json
from .errors import InputError
from .formats import atomic_output, iter_table, read_table

log = logging.getLogger(__name__)

LOSSES = ("mnrl", "cached-mnrl", "triplet")
TRIPLET_MARGIN = 0.2
METRIC = "mrr@10"
EVAL_KEY = f"eval_{METRIC}"


# ---------------------------------------------------------------- data


@dataclass
class EvalSet:
    """Queries, their relevant passages and the passages to retrieve from, with contract column names."""

    queries: pd.DataFrame  # qid, text
    qrels: pd.DataFrame  # qid, pid, rel
    passages: pd.DataFrame  # pid, text
    source: str

    def describe(self) -> dict:
        return {"source": self.source, "queries": int(self.queries["qid"].nunique()),
                "passages": len(self.passages), "relevant_pairs": len(self.qrels)}


def read_triplets(path) -> pd.DataFrame:
    frames = list(iter_table(path, "triplets"))
    for frame in frames:
        frame.attrs.clear()  # per-chunk line numbers: pandas cannot combine array-valued attrs
    triplets = pd.concat(frames, ignore_index=True)
    same = int((triplets["positive"] == triplets["negative"]).sum())
    if same:
        log.warning("%s: %d triplet(s) have the same positive and negative text", path, same)
    return triplets


def carve_validation(triplets: pd.DataFrame, n_queries: int, seed: int, max_passages: int
                     ) -> tuple[pd.DataFrame, EvalSet]:
    """Hold out ``n_queries`` distinct queries (every triplet of theirs leaves training) as a retrieval task.

    Their positives are to be found among the file's distinct passages: all of the held-out queries'
    positives and negatives, topped up with other passages of the file (seeded) to ``max_passages``.
    """
    distinct = pd.unique(triplets["query"])
    if len(distinct) <= n_queries:
        raise InputError(None, f"the triplets hold {len(distinct)} distinct queries, too few to hold out "
                               f"--val-queries {n_queries} and still train; lower it or pass --eval-queries")
    rng = np.random.default_rng(seed)
    held = set(distinct[np.sort(rng.choice(len(distinct), size=n_queries, replace=False))])
    is_held = triplets["query"].isin(held).to_numpy()
    held_rows, train = triplets[is_held], triplets[~is_held].reset_index(drop=True)

    texts = pd.unique(pd.concat([triplets["positive"], triplets["negative"]], ignore_index=True))
    pid_of = pd.Series(np.arange(len(texts), dtype=np.int64), index=texts)
    needed = np.unique(pid_of[pd.concat([held_rows["positive"], held_rows["negative"]])].to_numpy())
    others = np.setdiff1d(np.arange(len(texts)), needed)
    room = max(0, max_passages - len(needed))
    extra = rng.choice(others, size=min(room, len(others)), replace=False) if room else np.empty(0, np.int64)
    pids = np.sort(np.concatenate([needed, extra]).astype(np.int64))
    passages = pd.DataFrame({"pid": pids, "text": texts[pids]})

    queries = pd.DataFrame({"text": pd.unique(held_rows["query"])})
    queries.insert(0, "qid", np.arange(len(queries), dtype=np.int64))
    qid_of = pd.Series(queries["qid"].to_numpy(), index=queries["text"])
    pairs = held_rows[["query", "positive"]].drop_duplicates()
    qrels = pd.DataFrame({"qid": qid_of[pairs["query"]].to_numpy(), "pid": pid_of[pairs["positive"]].to_numpy(),
                          "rel": np.ones(len(pairs), dtype=np.int32)})
    log.info("validation slice: %d held-out queries (%d triplets removed from training), %d passages of %d "
             "distinct in the file", len(queries), int(is_held.sum()), len(passages), len(texts))
    return train, EvalSet(queries, qrels, passages, "held-out queries of the triplets file")


def load_eval_set(queries_path, qrels_path, collection_path) -> EvalSet:
    """An explicit evaluation set; only queries that have a relevant passage in the collection count."""
    queries, qrels = read_table(queries_path, "queries"), read_table(qrels_path, "qrels")
    passages = read_table(collection_path, "collection")
    qrels = qrels[(qrels["rel"] > 0) & qrels["qid"].isin(queries["qid"]) & qrels["pid"].isin(passages["pid"])]
    if qrels.empty:
        raise InputError(qrels_path, "no relevant (qid, pid) pair whose query and passage are in the given "
                                     "--eval-queries and --eval-collection")
    queries = queries[queries["qid"].isin(qrels["qid"])].reset_index(drop=True)
    return EvalSet(queries, qrels.reset_index(drop=True), passages, str(queries_path))


# ---------------------------------------------------------------- evaluation


def retrieval_mrr(model, eval_set: EvalSet, batch_size: int, k: int = 10) -> float:
    """MRR@k of exact inner-product retrieval over the eval passages, with the shared search and metric code."""
    from .metrics import mrr_at_k
    from .search import encode_texts, exact_topk, run_frame

    was_training = model.training
    model.eval()
    try:
        big = len(eval_set.passages) > 5000
        passage_emb = encode_texts(model, eval_set.passages["text"].tolist(), batch_size, progress=big)
        query_emb = encode_texts(model, eval_set.queries["text"].tolist(), batch_size)
    finally:
        model.train(was_training)
    if not (np.isfinite(passage_emb).all() and np.isfinite(query_emb).all()):
        log.error("the model produces non-finite embeddings: it is broken, scoring it 0")
        return 0.0
    scores, pids = exact_topk(query_emb, passage_emb, eval_set.passages["pid"].to_numpy(), k)
    run = run_frame(eval_set.queries["qid"].to_numpy(), scores, pids)
    return float(mrr_at_k(eval_set.qrels, run, k=k))


def make_evaluator(eval_set: EvalSet, batch_size: int):
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class RetrievalEvaluator(BaseEvaluator):
        """The trainer's evaluation hook: retrieval MRR@10 on the eval set (logged as ``eval_mrr@10``)."""

        def __init__(self):
            super().__init__()
            self.primary_metric = METRIC
            self.seconds = 0.0  # evaluation time inside the trainer's runtime, kept out of triplets/s

        def __call__(self, model, output_path=None, epoch=-1, steps=-1):
            started = time.perf_counter()
            score = retrieval_mrr(model, eval_set, batch_size)
            took = time.perf_counter() - started
            self.seconds += took
            log.info("step %s: retrieval MRR@10 %.4f (%.1fs)", max(steps, 0), score, took)
            return {METRIC: score}

    return RetrievalEvaluator()


# ---------------------------------------------------------------- the guard


class BestModelGuard(TrainerCallback):
    """Records every evaluation and saves the model whenever it beats all earlier ones.

    The trainer's own ``load_best_model_at_end`` ties best-model choice to checkpoint steps and never
    compares with the untrained base; here the base score (step 0) is the bar and the best trained
    model is written at once, so an interrupted run still leaves its best model behind.
    """

    def __init__(self, out_dir: Path, model_dir: Path, history: dict):
        self.out_dir, self.model_dir, self.history = out_dir, model_dir, history

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not metrics or EVAL_KEY not in metrics:
            return
        score, step = float(metrics[EVAL_KEY]), int(state.global_step)
        entry = {"step": step, METRIC: score, "epoch": state.epoch}
        if step == 0:
            self.history["base"] = entry
        else:
            self.history["evaluations"] = [e for e in self.history["evaluations"] if e["step"] != step] + [entry]
            best = self.history.get("best")
            if best is None or score > best[METRIC]:
                self.history["best"] = entry
                if state.is_world_process_zero:
                    save_model_atomically(model, self.model_dir)
                    log.info("new best MRR@10 %.4f at step %d: saved to %s", score, step, self.model_dir)
        if state.is_world_process_zero:
            write_json(self.out_dir / "eval_history.json", self.history)


def save_model_atomically(model, folder: Path) -> None:
    tmp = folder.with_name(f".{folder.name}.tmp")
    old = folder.with_name(f".{folder.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    model.save(str(tmp))
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def new_history() -> dict:
    return {"metric": METRIC, "base": None, "best": None, "evaluations": []}


# ---------------------------------------------------------------- model, loss and checks


def add_lora(model, r: int, alpha: int, dropout: float, targets: list[str]) -> int:
    """Attach a LoRA adapter through sentence-transformers' peft integration; returns trainable parameters."""
    from peft import LoraConfig, TaskType

    model.add_adapter(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                                 task_type=TaskType.FEATURE_EXTRACTION))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_normalize(model) -> bool:
    return any(type(module).__name__ == "Normalize" for module in model)


def retrieval_similarity(model) -> str:
    """The similarity the shared search actually uses: inner product, which is cosine after Normalize."""
    return "cosine" if has_normalize(model) else "dot"


def preflight(model, loss_name: str, base_pipeline: list[str] | None, base_max_len: int) -> list[str]:
    """Check that training optimises what retrieval measures; refuse to train otherwise."""
    pipeline = [type(module).__name__ for module in model]
    declared, used = model.similarity_fn_name, retrieval_similarity(model)
    loss_similarity = "cosine" if loss_name == "triplet" else used
    lines = [f"pipeline: {' -> '.join(pipeline)}"
             + ("" if base_pipeline is None else f" (base: {' -> '.join(base_pipeline)})"),
             f"Normalize layer: {'yes' if has_normalize(model) else 'no'}",
             f"model similarity: {declared}; retrieval scores: inner product ({used})",
             f"loss: {loss_name}, similarity {loss_similarity}"
             + (f", cosine distance, margin {TRIPLET_MARGIN}" if loss_name == "triplet" else
                ", hard negative plus in-batch negatives"),
             f"max_seq_length: {model.max_seq_length} (base: {base_max_len})"]
    for line in lines:
        log.info("pre-flight: %s", line)
    if base_pipeline is not None and pipeline != base_pipeline:
        raise InputError(None, f"the loaded model lost modules of its base ({pipeline} vs {base_pipeline})")
    if declared not in ("cosine", "dot") or (declared == "cosine" and used != "cosine"):
        raise InputError(None, f"the model declares {declared} similarity but retrieval scores by inner product "
                               "on embeddings that are not normalized; training would optimise something else")
    if loss_similarity != used:
        raise InputError(None, f"loss {loss_name} optimises {loss_similarity} similarity but this model is "
                               f"retrieved by {used}; use --loss mnrl")
    if model.max_seq_length != base_max_len:
        log.warning("pre-flight: training at max_seq_length %d, not the base's %d: the saved model keeps %d, "
                    "so evaluate it with that", model.max_seq_length, base_max_len, model.max_seq_length)
    return lines


def base_pipeline(model_path: str) -> list[str] | None:
    """Module class names listed in a saved model's modules.json (None when there is no such file)."""
    import json

    modules = Path(model_path) / "modules.json"
    if not modules.exists():
        return None
    return [entry["type"].rsplit(".", 1)[-1] for entry in json.loads(modules.read_text())]


def build_loss(name: str, model, mini_batch_size: int, gather: bool):
    from sentence_transformers import losses, util

    if name == "triplet":
        return losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.COSINE,
                                  triplet_margin=TRIPLET_MARGIN)
    # cos_sim with the usual scale 20; a dot-product model keeps unscaled dot products, as the loss advises.
    similarity, scale = (util.cos_sim, 20.0) if retrieval_similarity(model) == "cosine" else (util.dot_score, 1.0)
    if name == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, scale=scale, similarity_fct=similarity,
                                                         mini_batch_size=mini_batch_size,
                                                         gather_across_devices=gather)
    return losses.MultipleNegativesRankingLoss(model, scale=scale, similarity_fct=similarity,
                                               gather_across_devices=gather)


# ---------------------------------------------------------------- W&B and local curves


def wandb_report_to(enabled: bool, project: str, out_dir: Path) -> list[str]:
    """Configure W&B through its environment variables, which the trainer's W&B callback reads."""
    if not enabled:
        return []
    try:
        import wandb  # noqa: F401
    except ImportError:
        log.warning("wandb is not installed: curves go to train_log.csv and loss_curve.png only")
        return []
    os.environ["WANDB_PROJECT"] = project
    os.environ.setdefault("WANDB_DIR", str(out_dir))
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
        log.info("no WANDB_API_KEY: W&B logs offline under %s/wandb (upload later with `wandb sync`)",
                 os.environ["WANDB_DIR"])
    return ["wandb"]


def finish_wandb() -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def curve_rows(log_history: list[dict]) -> list[dict]:
    """One row per step from the trainer's log history: training loss, learning rate and eval MRR@10."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        step = int(entry.get("step", 0))
        row = rows.setdefault(step, {"step": step, "loss": "", "lr": "", METRIC: ""})
        if "loss" in entry:
            row["loss"], row["lr"] = entry["loss"], entry.get("learning_rate", "")
        if EVAL_KEY in entry:
            row[METRIC] = entry[EVAL_KEY]
    return [rows[step] for step in sorted(rows)]


def write_curves(rows: list[dict], out_dir: Path, base: float | None) -> None:
    with atomic_output(out_dir / "train_log.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "loss", "lr", METRIC])
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, eval_ax) = plt.subplots(1, 2, figsize=(11, 4))
    losses = [(r["step"], r["loss"]) for r in rows if r["loss"] != ""]
    evals = [(r["step"], r[METRIC]) for r in rows if r[METRIC] != ""]
    if losses:
        loss_ax.plot(*zip(*losses), marker=".")
    loss_ax.set(title="training loss", xlabel="step", ylabel="loss")
    if evals:
        eval_ax.plot(*zip(*evals), marker="o", label="fine-tuned")
    if base is not None:
        eval_ax.axhline(base, color="grey", linestyle="--", label=f"base {base:.4f}")
    eval_ax.set(title="retrieval MRR@10 (validation)", xlabel="step", ylabel="MRR@10")
    eval_ax.legend()
    fig.tight_layout()
    with atomic_output(out_dir / "loss_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- LoRA merge


def merge_and_verify(adapter_dir: Path, merged_dir: Path, texts: list[str], device: str) -> float:
    """Save the adapter folded into the base; return the largest embedding difference after reloading."""
    from .models import load_model
    from .search import encode_texts

    adapter_model = load_model(str(adapter_dir), device=device, precision="fp32")
    merged = load_model(str(adapter_dir), device=device, precision="fp32", merge_adapter=True)
    save_model_atomically(merged, merged_dir)
    reloaded = load_model(str(merged_dir), device=device, precision="fp32")
    return float(np.abs(encode_texts(adapter_model, texts, 32) - encode_texts(reloaded, texts, 32)).max())


# ---------------------------------------------------------------- the whole run

EXIT_REGRESSION = 3
# Everything a run writes; --overwrite removes only these, never other files a user keeps in the folder.
OUTPUTS = ("model", "merged", "rejected-model", "checkpoints", "eval", "wandb", "config.json", "train_log.csv",
           "loss_curve.png", "eval_history.json", "README.md", "result.json", ".model.tmp", ".model.old")
# Flags that change neither the trained model nor its evaluation: a resumed run may differ in these.
_NOT_IN_SIGNATURE = ("resume", "overwrite", "allow_regression", "no_wandb", "wandb_project", "run_name", "verbose")


def signature(args) -> dict:
    from .cli import signature as shared_signature

    inputs = {key: getattr(args, key) for key in ("train_file", "eval_queries", "eval_qrels", "eval_collection")}
    inputs["model"] = args.model
    return shared_signature(args, inputs, ignore=_NOT_IN_SIGNATURE)


def prepare_output(out: Path, args, sig: dict) -> bool:
    """Apply --overwrite/--resume to the output folder; returns True when a finished run is there."""
    import json

    if args.resume and args.overwrite:
        raise InputError(out, "choose one of --resume and --overwrite")
    present = [name for name in OUTPUTS if (out / name).exists()]
    if present and args.resume:
        config = out / "config.json"
        saved = json.loads(config.read_text()).get("signature") if config.exists() else None
        if saved != sig:
            raise InputError(out, f"holds a run with other settings ({', '.join(changed_settings(saved, sig))}); "
                                  "use --overwrite to start again")
        return (out / "result.json").exists()
    if present and not args.overwrite:
        raise InputError(out, f"already holds a run ({', '.join(present)}); pass --overwrite to replace it "
                              "or --resume to continue it")
    for name in present:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return False


def changed_settings(saved: dict | None, sig: dict) -> list[str]:
    if not saved:
        return ["no config.json"]
    old = {**saved.get("arguments", {}), **saved.get("fingerprints", {})}
    new = {**sig["arguments"], **sig["fingerprints"]}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def finished_run(out: Path, allow_regression: bool) -> int:
    import json

    result = json.loads((out / "result.json").read_text())
    log.info("%s: training already complete (base MRR@10 %.4f, best %.4f at step %s); nothing to do", out,
             result["base_mrr10"], result["best_mrr10"], result["best_step"])
    if result["accepted"] or allow_regression:
        return 0
    shout_regression(result["base_mrr10"], result["best_mrr10"], allowed=False)
    return EXIT_REGRESSION


def shout_regression(base: float, best: float | None, allowed: bool) -> None:
    bar = "!" * 78
    best_text = "no evaluation" if best is None else f"{best:.4f}"
    what = ("--allow-regression given: the best fine-tuned model is kept in model/ anyway" if allowed else
            "the fine-tuned model is NOT kept as model/ (it is in rejected-model/); exit status 3")
    log.error("\n%s\nREGRESSION: fine-tuning did not beat the base model on retrieval MRR@10\n"
              "base %.4f, best fine-tuned %s\n%s\n%s", bar, base, best_text, what, bar)


def finetune(args) -> int:
    """The whole of finetune.py after argument parsing; returns the exit status."""
    out = Path(args.output_dir)
    sig = signature(args)
    if prepare_output(out, args, sig):
        return finished_run(out, args.allow_regression)
    out.mkdir(parents=True, exist_ok=True)

    from .cli import write_config
    from .models import load_model, resolve_device, resolve_model, resolve_precision

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    lr = args.lr if args.lr is not None else (1e-4 if args.lora else 2e-5)
    batch_size = args.batch_size or (256 if device == "cuda" else 64)
    eval_batch_size = args.eval_batch_size or (256 if device == "cuda" else 64)
    world = int(os.environ.get("WORLD_SIZE", "1"))

    triplets = read_triplets(args.train_file)
    if args.eval_queries or args.eval_qrels or args.eval_collection:
        if not (args.eval_queries and args.eval_qrels and args.eval_collection):
            raise InputError(None, "--eval-queries, --eval-qrels and --eval-collection go together")
        train, eval_set = triplets, load_eval_set(args.eval_queries, args.eval_qrels, args.eval_collection)
    else:
        train, eval_set = carve_validation(triplets, args.val_queries, args.seed, args.val_max_passages)

    model_path = resolve_model(args.model)
    # Trained in fp32; bf16/fp16 come in as mixed precision through the trainer on GPU.
    model = load_model(args.model, device=device, precision="fp32")
    base_max_len = model.max_seq_length
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    trainable = add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_targets) \
        if args.lora else sum(p.numel() for p in model.parameters())
    checks = preflight(model, args.loss, base_pipeline(model_path), base_max_len)
    loss = build_loss(args.loss, model, args.mini_batch_size, gather=world > 1)

    resolved = {"device": device, "precision": precision, "lr": lr, "batch_size": batch_size, "world_size": world,
                "max_seq_length": model.max_seq_length, "base_model_path": model_path,
                "trainable_parameters": trainable, "train_triplets": len(train), "eval_set": eval_set.describe()}
    write_config(out, args, inputs={"train_file": args.train_file, "eval_queries": args.eval_queries,
                                    "eval_qrels": args.eval_qrels, "eval_collection": args.eval_collection},
                 extra={"signature": sig, "resolved": resolved, "preflight": checks})

    checkpoint = last_complete_checkpoint(out / "checkpoints")
    history = new_history()
    if checkpoint:
        import json

        history = json.loads((out / "eval_history.json").read_text())
        done = int(Path(checkpoint).name.rsplit("-", 1)[-1])
        history["evaluations"] = [e for e in history["evaluations"] if e["step"] <= done]
        log.info("resuming from %s", checkpoint)
    elif args.resume:
        log.info("--resume: no checkpoint in %s yet, starting from the beginning", out / "checkpoints")

    trainer = build_trainer(args, model, train, loss, eval_set, out, history, lr=lr, batch_size=batch_size,
                            eval_batch_size=eval_batch_size, precision=precision, device=device,
                            eval_on_start=checkpoint is None)
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        finish_wandb()
    if not trainer.is_world_process_zero():
        return 0
    return conclude(args, out, trainer, output.metrics, history, eval_set, checkpoint, device,
                    {"lr": lr, "batch_size": batch_size, "world_size": world})


def build_trainer(args, model, train: pd.DataFrame, loss, eval_set: EvalSet, out: Path, history: dict, *,
                  lr: float, batch_size: int, eval_batch_size: int, precision: str, device: str,
                  eval_on_start: bool):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    report_to = wandb_report_to(not args.no_wandb, args.wandb_project, out)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=args.epochs, max_steps=args.max_steps or -1,
        per_device_train_batch_size=batch_size, learning_rate=lr, warmup_steps=args.warmup_ratio,
        seed=args.seed, bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
        eval_strategy="steps", eval_steps=args.eval_steps, eval_on_start=eval_on_start,
        save_strategy="steps", save_steps=args.save_steps, save_total_limit=1,
        logging_strategy="steps", logging_steps=args.logging_steps, logging_first_step=True,
        report_to=report_to or "none", run_name=args.run_name,
        # In-batch negatives must not include a copy of the query's own positive.
        batch_sampler=BatchSamplers.BATCH_SAMPLER if args.loss == "triplet" else BatchSamplers.NO_DUPLICATES,
    )
    dataset = Dataset.from_pandas(train[["query", "positive", "negative"]], preserve_index=False)
    return SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=dataset, loss=loss,
        evaluator=make_evaluator(eval_set, eval_batch_size),
        callbacks=[BestModelGuard(out, out / "model", history)])


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint whose save finished; a kill during a save leaves a torn one behind.

    The trainer writes ``trainer_state.json`` last, so a checkpoint without a readable one is torn
    (transformers' own ``get_last_checkpoint`` would pick it and then fail to resume). Torn ones are removed.
    """
    import json

    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.name.rsplit("-", 1)[-1].isdigit()),
                   key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True)
    for candidate in found:
        try:
            json.loads((candidate / "trainer_state.json").read_text())
            return str(candidate)
        except (OSError, ValueError):
            log.warning("%s was cut off while being saved; removing it", candidate)
            shutil.rmtree(candidate, ignore_errors=True)
    return None


def conclude(args, out: Path, trainer, metrics: dict, history: dict, eval_set: EvalSet, checkpoint, device: str,
             settings: dict) -> int:
    """Curves, verdict, optional merge, model card and result.json; the exit status."""
    base = history["base"][METRIC]
    best = history["best"]
    best_score = best[METRIC] if best else None
    accepted = best_score is not None and best_score > base
    write_curves(curve_rows(trainer.state.log_history), out, base)

    model_dir = out / "model"
    if not accepted:
        shout_regression(base, best_score, allowed=args.allow_regression)
        if not args.allow_regression and model_dir.exists():
            model_dir.rename(out / "rejected-model")
    merge_diff = None
    if args.lora and args.merge and model_dir.exists():
        texts = eval_set.queries["text"].tolist()[:32] + eval_set.passages["text"].tolist()[:32]
        merge_diff = merge_and_verify(model_dir, out / "merged", texts, device)
        log.info("merged LoRA model saved to %s; max embedding difference to the adapter model %.2e",
                 out / "merged", merge_diff)
        if merge_diff > 1e-5:
            raise RuntimeError(f"merged model differs from the adapter model by {merge_diff:.2e} (> 1e-5)")

    seconds = float(metrics.get("train_runtime", 0.0))
    eval_seconds = trainer.evaluator.seconds
    steps = int(trainer.state.global_step)
    # Steps run by this process (a resumed run starts past the checkpoint) over time spent training, not evaluating.
    done_here = steps - (int(Path(checkpoint).name.rsplit("-", 1)[-1]) if checkpoint else 0)
    train_seconds = max(seconds - eval_seconds, 1e-9)
    result = {
        "base_mrr10": base, "best_mrr10": best_score, "best_step": best["step"] if best else None,
        "improvement": None if best_score is None else best_score - base, "accepted": accepted,
        "steps": steps, "seconds": round(seconds, 2), "eval_seconds": round(eval_seconds, 2),
        "triplets_per_second": round(done_here * settings["batch_size"] * settings["world_size"] / train_seconds, 2),
        "train_triplets_seen": steps * settings["batch_size"] * settings["world_size"],
        "model_dir": str(model_dir) if model_dir.exists() else None,
        "merged_dir": str(out / "merged") if merge_diff is not None else None, "merge_max_abs_diff": merge_diff,
        "resumed_from": Path(checkpoint).name if checkpoint else None, "eval_set": eval_set.describe(),
        "loss": args.loss, "lora": args.lora, **settings,
    }
    write_model_card(out, args, result)
    write_json(out / "result.json", result)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    best_text = "none" if best_score is None else f"{best_score:.4f} (step {result['best_step']})"
    print(f"{'LoRA' if args.lora else 'full'} fine-tuning, {args.loss}: {steps} steps in {seconds:.0f}s "
          f"(evaluation {eval_seconds:.0f}s) | MRR@10 base {base:.4f} -> best {best_text} | "
          f"{'kept' if accepted else 'REGRESSION'}: {out}")
    return 0 if accepted or args.allow_regression else EXIT_REGRESSION


def write_model_card(out: Path, args, result: dict) -> None:
    kind = (f"LoRA adapter (r={args.lora_r}, alpha={args.lora_alpha}, dropout={args.lora_dropout}, "
            f"targets {', '.join(args.lora_targets)})" if args.lora else "full fine-tuning")
    loss = {"mnrl": "MultipleNegativesRankingLoss (hard negative + in-batch negatives, no-duplicates batches)",
            "cached-mnrl": "CachedMultipleNegativesRankingLoss (GradCache; hard + in-batch negatives)",
            "triplet": f"TripletLoss (cosine distance, margin {TRIPLET_MARGIN})"}[args.loss]
    best = "n/a" if result["best_mrr10"] is None else f"{result['best_mrr10']:.4f}"
    ev = result["eval_set"]
    lines = [
        f"# Fine-tuned {args.model}", "",
        f"- **Method**: {kind}", f"- **Loss**: {loss}",
        f"- **Data**: `{args.train_file}`; {result['steps']} steps of {result['batch_size']} triplets per device "
        f"(learning rate {result['lr']:g}), {result['train_triplets_seen']} triplets seen",
        f"- **Validation**: retrieval over {ev['passages']} passages for {ev['queries']} queries ({ev['source']})",
        "", "| model | MRR@10 |", "| --- | --- |", f"| base | {result['base_mrr10']:.4f} |",
        f"| fine-tuned (best, step {result['best_step']}) | {best} |", "",
        "The saved model is the evaluation with the best MRR@10. " + (
            "It beats the base." if result["accepted"] else "**It does not beat the base: do not use it.**"),
        "", "Load it with `SentenceTransformer(\"model\")` from this folder"
        + (" (or the merged copy in `merged/`, which runs at base-model speed)." if result["merged_dir"] else "."),
        "Curves: `train_log.csv`, `loss_curve.png`; every evaluation: `eval_history.json`; settings: `config.json`.",
    ]
    with atomic_output(out / "README.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
