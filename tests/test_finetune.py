"""finetune.py on a tiny random model: outputs, resume, LoRA merge, W&B offline, the regression guard, bad input."""

from __future__ import annotations

import csv
import json
import os
import random

import numpy as np
import pytest
from conftest import write_lines

import finetune
from msmarco_ft import training

WORDS = ("river bank money loan ocean tide forest pine desert sand mountain snow city train bridge tower "
         "garden rose apple pear engine wheel piano violin doctor nurse planet orbit rocket comet castle "
         "king queen bread butter cheese coffee tea winter summer spring autumn cloud storm thunder "
         "island harbor ship sail lamp candle clock watch camera lens paper pencil").split()


def make_triplets(path, n_queries=48, seed=0, pairs=6):
    """Query word K_i belongs with passage word V_i, which a random encoder cannot know but training teaches.

    Positive and hard negative share the query's filler words, so the base ranks both high, in no
    particular order: base MRR@10 is middling and a few training steps raise it.
    """
    rng = random.Random(seed)
    keys, values, fillers = WORDS[:pairs], WORDS[pairs:2 * pairs], WORDS[2 * pairs:]
    lines = []
    for q in range(n_queries):
        i = q % pairs
        shared = rng.sample(fillers, 2)
        for _ in range(2):
            j = rng.choice([x for x in range(pairs) if x != i])
            x, y = rng.sample([w for w in fillers if w not in shared], 2)
            lines.append(f"{keys[i]} {' '.join(shared)}\t{values[i]} {' '.join(shared)} {x}\t"
                         f"{values[j]} {' '.join(shared)} {y}")
    return write_lines(path, lines)


@pytest.fixture(scope="module")
def triplets(tmp_path_factory):
    return make_triplets(tmp_path_factory.mktemp("data") / "triplets.tsv")


def run(tiny_model, triplets, out, *extra):
    return finetune.main(["--train-file", str(triplets), "--model", str(tiny_model), "--output-dir", str(out),
                          "--device", "cpu", "--batch-size", "8", "--max-steps", "4", "--eval-steps", "2",
                          "--save-steps", "2", "--val-queries", "12", "--no-wandb", *extra])


def embed(folder, texts):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)


def test_full_run_writes_guarded_model_and_curves(tiny_model, triplets, tmp_path):
    out = tmp_path / "full"
    assert run(tiny_model, triplets, out, "--lr", "3e-3") == 0
    for name in ("model", "config.json", "train_log.csv", "loss_curve.png", "eval_history.json", "README.md",
                 "result.json"):
        assert (out / name).exists(), name
    assert not (out / "checkpoints").exists()
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "model" / "modules.json").read_text())]
    assert modules[-1] == "Normalize"

    result = json.loads((out / "result.json").read_text())
    history = json.loads((out / "eval_history.json").read_text())
    assert result["steps"] == 4 and result["accepted"] is True and result["batch_size"] == 8
    assert result["triplets_per_second"] > 0 and result["eval_seconds"] > 0
    assert result["best_mrr10"] > result["base_mrr10"] == history["base"]["mrr@10"]
    assert [e["step"] for e in history["evaluations"]] == [2, 4]
    assert result["best_mrr10"] == max(e["mrr@10"] for e in history["evaluations"])
    assert result["eval_set"]["queries"] == 12

    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert list(rows[0]) == ["step", "loss", "lr", "mrr@10"]
    assert [r["step"] for r in rows if r["loss"]] == ["1", "2", "3", "4"]
    assert [r["step"] for r in rows if r["mrr@10"]] == ["0", "2", "4"]
    assert "MRR@10" in (out / "README.md").read_text()

    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["lr"] == 3e-3 and any("Normalize" in line for line in config["preflight"])
    assert run(tiny_model, triplets, out, "--lr", "3e-3", "--resume") == 0  # finished: a no-op
    assert run(tiny_model, triplets, out, "--lr", "3e-3") == 2  # refuses to overwrite
    assert run(tiny_model, triplets, out, "--lr", "1e-3", "--resume") == 2  # other settings


def test_validation_queries_never_trained_on(triplets):
    frame = training.read_triplets(triplets)
    train, eval_set = training.carve_validation(frame, 12, seed=1, max_passages=60)
    assert not set(train["query"]) & set(eval_set.queries["text"])
    assert len(train) == (~frame["query"].isin(set(eval_set.queries["text"]))).sum()
    texts = dict(zip(eval_set.passages["pid"], eval_set.passages["text"]))
    queries = dict(zip(eval_set.queries["qid"], eval_set.queries["text"]))
    for qid, pid in zip(eval_set.qrels["qid"], eval_set.qrels["pid"]):
        assert ((frame["query"] == queries[qid]) & (frame["positive"] == texts[pid])).any()
    assert len(eval_set.passages) == 60


def test_lora_adapter_and_merged_copy_agree(tiny_model, triplets, tmp_path):
    out = tmp_path / "lora"
    assert run(tiny_model, triplets, out, "--lora", "--merge", "--lr", "0.1", "--allow-regression") == 0
    assert (out / "model" / "adapter_config.json").exists()
    assert not (out / "merged" / "adapter_config.json").exists()
    result = json.loads((out / "result.json").read_text())
    assert result["merge_max_abs_diff"] <= 1e-5
    texts = ["river bank money", "piano violin clock tower", "coffee"]
    assert np.abs(embed(out / "model", texts) - embed(out / "merged", texts)).max() <= 1e-5
    assert np.abs(embed(out / "model", texts) - embed(tiny_model, texts)).max() > 1e-4


def test_resume_continues_from_last_checkpoint(tiny_model, triplets, tmp_path, monkeypatch):
    from transformers.trainer_callback import DefaultFlowCallback

    original = DefaultFlowCallback.on_step_end

    def stop_after_step_3(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt
        return original(self, args, state, control, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(DefaultFlowCallback, "on_step_end", stop_after_step_3)
    assert run(tiny_model, triplets, out) == 130
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "result.json").exists()
    monkeypatch.setattr(DefaultFlowCallback, "on_step_end", original)

    assert run(tiny_model, triplets, out, "--resume", "--allow-regression") == 0
    result = json.loads((out / "result.json").read_text())
    assert result["resumed_from"] == "checkpoint-2" and result["steps"] == 4
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [r["step"] for r in rows if r["loss"]] == ["1", "2", "3", "4"]
    assert [e["step"] for e in json.loads((out / "eval_history.json").read_text())["evaluations"]] == [2, 4]


def test_wandb_goes_offline_without_api_key(tiny_model, triplets, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_PROJECT", "unused")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    args = ["--train-file", str(triplets), "--model", str(tiny_model), "--output-dir", str(tmp_path / "wandb-run"),
            "--device", "cpu", "--batch-size", "8", "--max-steps", "2", "--eval-steps", "2", "--val-queries", "12",
            "--run-name", "tiny", "--allow-regression"]
    assert finetune.main(args) == 0
    assert os.environ["WANDB_MODE"] == "offline"
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert (tmp_path / "wandb-run" / "train_log.csv").exists()


def test_regression_guard_rejects_a_broken_model(tiny_model, triplets, tmp_path, capsys):
    out = tmp_path / "broken"
    assert run(tiny_model, triplets, out, "--lr", "50", "--warmup-ratio", "0") == training.EXIT_REGRESSION
    assert "REGRESSION" in capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["accepted"] is False and result["best_mrr10"] <= result["base_mrr10"]
    assert not (out / "model").exists() and (out / "rejected-model").exists()
    assert run(tiny_model, triplets, out, "--lr", "50", "--warmup-ratio", "0", "--resume") == training.EXIT_REGRESSION

    allowed = tmp_path / "allowed"
    assert run(tiny_model, triplets, allowed, "--lr", "50", "--warmup-ratio", "0", "--allow-regression") == 0
    assert (allowed / "model").exists()
    assert json.loads((allowed / "result.json").read_text())["accepted"] is False


@pytest.mark.parametrize("lines, message", [
    (["only a query\tand a positive"], "expected 3 tab-separated columns"),
    (["q\t\tneg"], "empty positive"),
    ([], "empty"),
])
def test_bad_triplet_files_fail_cleanly(tiny_model, tmp_path, capsys, lines, message):
    bad = write_lines(tmp_path / "bad.tsv", lines)
    assert run(tiny_model, bad, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "config.json").exists()


def test_too_few_queries_to_hold_out(tiny_model, tmp_path, capsys):
    small = make_triplets(tmp_path / "small.tsv", n_queries=5)
    assert run(tiny_model, small, tmp_path / "out") == 2
    assert "too few" in capsys.readouterr().err


def test_preflight_refuses_a_model_whose_similarity_retrieval_does_not_use(tiny_model):
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(tiny_model), device="cpu")
    unnormalized = SentenceTransformer(modules=[full[0], full[1]], device="cpu", similarity_fn_name="cosine")
    with pytest.raises(training.InputError, match="not normalized"):
        training.preflight(unnormalized, "mnrl", None, 64)
    dot = SentenceTransformer(modules=[full[0], full[1]], device="cpu", similarity_fn_name="dot")
    with pytest.raises(training.InputError, match="use --loss mnrl"):
        training.preflight(dot, "triplet", None, 64)
    assert any("cosine" in line for line in training.preflight(full, "triplet", ["Transformer", "Pooling",
                                                                                 "Normalize"], 64))


def test_resume_skips_a_checkpoint_torn_by_a_kill(tmp_path):
    folder = tmp_path / "checkpoints"
    for step, complete in ((4, True), (8, True), (12, False)):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"weights")
        if complete:
            (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert training.last_complete_checkpoint(folder) == str(folder / "checkpoint-8")
    assert not (folder / "checkpoint-12").exists()
    assert training.last_complete_checkpoint(tmp_path / "none") is None
