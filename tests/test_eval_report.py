"""eval_model.py end to end on a tiny model and collection; report.py and the statistics on synthetic results."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import eval_model
import report
from msmarco_ft.reporting import write_evaluation
from msmarco_ft.stats import bootstrap_ci, paired_randomization_test
from tests.conftest import build_tiny_model, write_lines

WORDS = "apple river mountain ocean city train music paper glass stone cloud fire water light".split()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("data")
    passages = [" ".join(rng.choice(WORDS, 6)) for _ in range(30)]
    write_lines(root / "collection.tsv", [f"{pid}\t{text}" for pid, text in enumerate(passages)])
    # Each query is its positive passage's first words, so a sensible model finds it.
    write_lines(root / "queries.tsv", [f"{100 + i}\t{' '.join(passages[3 * i].split()[:3])}" for i in range(8)])
    write_lines(root / "qrels.tsv", [f"{100 + i} 0 {3 * i} 1" for i in range(8)])
    return root


def eval_argv(model, data, out, *extra):
    return ["--model", str(model), "--filtered-queries", str(data / "queries.tsv"),
            "--collection", str(data / "collection.tsv"), "--qrels", str(data / "qrels.tsv"),
            "--output-dir", str(out), "--cache-dir", str(out.parent / "cache"), "--chunk-size", "7",
            "--top-k", "20", "--device", "cpu", "--no-progress", *extra]


def test_eval_model_writes_labelled_run_trec_and_metrics(tmp_path, tiny_model, tiny_data):
    out = tmp_path / "evals"
    assert eval_model.main(eval_argv(tiny_model, tiny_data, out)) == 0
    label = "tiny-model"
    body = json.loads((out / f"{label}.metrics.json").read_text())
    assert set(body["metrics"]) == {"MRR@10", "MRR@100", "Recall@10", "Recall@100", "nDCG@10"}
    assert body["queries"]["qrels"] == 8 and body["queries"]["both"] == 8
    assert body["model"] == str(tiny_model) and body["timing"]["chunks"] == 5
    per_query = pd.read_parquet(out / body["per_query"])
    assert per_query["rr@10"].mean() == pytest.approx(body["metrics"]["MRR@10"])
    run = pd.read_parquet(out / f"{label}.run.parquet")
    assert len(run) == 8 * 20 and run.groupby("qid")["rank"].max().eq(20).all()
    trec = (out / f"{label}.trec").read_text().splitlines()
    assert len(trec) == len(run) and trec[0].split()[1] == "Q0" and trec[0].split()[5] == label
    config = json.loads((out / f"{label}.config.json").read_text())
    assert config["signature"]["arguments"]["top_k"] == 20


def test_two_models_write_two_distinct_file_sets(tmp_path, tiny_model, tiny_data):
    other = build_tiny_model(tmp_path / "second", seed=1).rename(tmp_path / "second" / "other-model")
    out = tmp_path / "evals"
    assert eval_model.main(eval_argv(tiny_model, tiny_data, out, "--run-format", "tsv")) == 0
    assert eval_model.main(eval_argv(other, tiny_data, out, "--run-format", "tsv")) == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == sorted(f"{label}.{suffix}" for label in ("tiny-model", "other-model")
                           for suffix in ("config.json", "metrics.json", "per_query.parquet", "run.tsv", "trec"))
    first = (out / "tiny-model.run.tsv").read_text()
    assert first.startswith("query_id\tpassage_id\trank\tscore\n")
    assert first != (out / "other-model.run.tsv").read_text()


def test_resume_is_a_no_op_when_current_and_overwrite_is_refused(tmp_path, tiny_model, tiny_data, capsys):
    out = tmp_path / "evals"
    argv = eval_argv(tiny_model, tiny_data, out)
    assert eval_model.main(argv) == 0
    before = (out / "tiny-model.metrics.json").stat().st_mtime_ns
    assert eval_model.main(argv + ["--resume"]) == 0
    assert (out / "tiny-model.metrics.json").stat().st_mtime_ns == before
    assert eval_model.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert eval_model.main(eval_argv(tiny_model, tiny_data, out, "--top-k", "10", "--resume")) == 0
    assert pd.read_parquet(out / "tiny-model.run.parquet")["rank"].max() == 10


def test_lora_adapter_merged_at_load_gets_its_own_label(tmp_path, tiny_model, tiny_data):
    from peft import LoraConfig

    from msmarco_ft.models import load_model

    model = load_model(str(tiny_model), device="cpu")
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    model.save(str(adapter))
    out = tmp_path / "evals"
    assert eval_model.main(eval_argv(adapter, tiny_data, out)) == 0
    assert eval_model.main(eval_argv(adapter, tiny_data, out, "--merge")) == 0
    unmerged = pd.read_parquet(out / "adapter.run.parquet")
    merged = pd.read_parquet(out / "adapter-merged.run.parquet")
    assert (unmerged["pid"].to_numpy() == merged["pid"].to_numpy()).all()
    assert np.abs(unmerged["score"].to_numpy() - merged["score"].to_numpy()).max() < 1e-4


@pytest.mark.parametrize("extra, message", [(["--top-k", "0"], "--top-k"), (["--top-k", "1001"], "--top-k"),
                                            (["--chunk-size", "0"], "--chunk-size")])
def test_eval_model_bad_arguments_exit_2(tmp_path, tiny_model, tiny_data, capsys, extra, message):
    assert eval_model.main(eval_argv(tiny_model, tiny_data, tmp_path / "o", *extra)) == 2
    assert message in capsys.readouterr().err


def test_eval_model_bad_files_exit_2(tmp_path, tiny_model, tiny_data, capsys):
    bad_qrels = write_lines(tmp_path / "bad.qrels", ["100 0 x 1"])
    argv = eval_argv(tiny_model, tiny_data, tmp_path / "o")
    argv[argv.index("--qrels") + 1] = str(bad_qrels)
    assert eval_model.main(argv) == 2
    assert f"{bad_qrels}:1:" in capsys.readouterr().err
    argv = eval_argv(tiny_model, tiny_data, tmp_path / "o")
    argv[argv.index("--collection") + 1] = str(tmp_path / "missing.tsv")
    assert eval_model.main(argv) == 2
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- statistics and report


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(3).random(500)
    low, high = bootstrap_ci(values, n_resamples=2000, seed=1)
    assert low < values.mean() < high and high - low < 0.1
    assert bootstrap_ci(values, n_resamples=2000, seed=1) == (low, high)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_randomization_test_is_exact_on_few_queries():
    # Four queries, all better by 1: only the all-positive (and all-negative) sign pattern is as extreme.
    result = paired_randomization_test(np.ones(4), np.zeros(4))
    assert result["p_value"] == pytest.approx(2 / 16)
    assert paired_randomization_test(np.arange(5.0), np.arange(5.0))["p_value"] == 1.0


def write_synthetic(folder, label, rr10, qids=None):
    rr10 = np.asarray(rr10, dtype=np.float64)
    qids = np.arange(len(rr10)) if qids is None else qids
    per_query = pd.DataFrame({"qid": qids, "rr@10": rr10, "rr@100": rr10, "recall@100": (rr10 > 0) * 1.0,
                              "ndcg@10": rr10})
    metrics = {"MRR@10": rr10.mean(), "MRR@100": rr10.mean(), "Recall@100": (rr10 > 0).mean(), "nDCG@10": rr10.mean(),
               "queries": {"qrels": len(rr10)}}
    return write_evaluation(folder / f"{label}.metrics.json", metrics, per_query,
                            extra={"label": label, "model": f"models/{label}"})


@pytest.fixture
def synthetic(tmp_path):
    rng = np.random.default_rng(7)
    base = rng.choice([0.0, 0.1, 0.2, 0.5, 1.0], size=300)
    better = np.minimum(1.0, base + rng.choice([0.0, 0.3], size=300))
    worse = np.maximum(0.0, base - rng.choice([0.0, 0.2], size=300))
    return {"base": write_synthetic(tmp_path, "base", base), "better": write_synthetic(tmp_path, "better", better),
            "same": write_synthetic(tmp_path, "same", base), "worse": write_synthetic(tmp_path, "worse", worse)}


def test_report_finds_the_real_gain_and_flags_the_worse_model(tmp_path, synthetic, capsys):
    out = tmp_path / "report"
    latency = tmp_path / "better.json"
    latency.write_text(json.dumps({"label": "better", "encode": {"1": {"p50_ms": 4.25, "p95_ms": 9.0}},
                                   "end_to_end": {"p50_ms": 6.5, "encode_share": 0.8},
                                   "ratios": {"unmerged": {"encode": 1.12}, "merged": {"encode": 1.01}},
                                   "max_abs_diff": {"merged_vs_unmerged": 2e-7}}))
    curve = tmp_path / "loss.png"
    curve.write_bytes(b"\x89PNG fake")
    argv = ["--baseline", str(synthetic["base"]), "--metrics", str(synthetic["better"]), str(synthetic["same"]),
            str(synthetic["worse"]), "--names", "better", "same", "worse", "--latency", str(latency),
            "--loss-curves", str(curve), str(tmp_path / "missing.png"), "--output-dir", str(out),
            "--resamples", "2000"]
    assert report.main(argv) == 0
    result = json.loads((out / "report.json").read_text())
    by_name = {m["name"]: m for m in result["models"]}
    assert by_name["better"]["vs_baseline"]["MRR@10"]["p_value"] < 0.05
    assert by_name["same"]["vs_baseline"]["MRR@10"]["p_value"] == pytest.approx(1.0)
    assert by_name["worse"]["vs_baseline"]["MRR@10"]["difference"] < 0
    assert result["winner"] == {"name": "better", "is_baseline": False, "significant": True}
    assert [w["name"] for w in result["worse_than_baseline"]] == ["worse"]
    low, high = by_name["better"]["metrics"]["MRR@10"]["ci_low"], by_name["better"]["metrics"]["MRR@10"]["ci_high"]
    assert low < by_name["better"]["metrics"]["MRR@10"]["value"] < high
    assert by_name["better"]["latency"]["encode p50 bs=1 (ms)"] == 4.25
    markdown = (out / "report.md").read_text()
    assert "Winner: better" in markdown and "worse is worse than the baseline" in markdown
    assert "4.25" in markdown and "![loss](../loss.png)" in markdown and "missing.png" not in markdown
    assert "80% query encoding and 20% search" in markdown
    assert "unmerged adapter 1.120x, merged adapter 1.010x" in markdown and "2.0e-07" in markdown
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "config.json").exists()
    printed = capsys.readouterr()
    assert "base (baseline)" in printed.out and "Winner: better" in printed.out
    assert "missing.png: no such image" in printed.err
    assert report.main(argv) == 2  # refuses to overwrite


def test_report_is_reproducible_with_a_seed(tmp_path, synthetic):
    results = []
    for name in ("a", "b"):
        argv = ["--baseline", str(synthetic["base"]), "--metrics", str(synthetic["better"]),
                "--output-dir", str(tmp_path / name), "--resamples", "500", "--seed", "3"]
        assert report.main(argv) == 0
        results.append(json.loads((tmp_path / name / "report.json").read_text())["models"])
    assert results[0] == results[1]


def test_report_bad_inputs_exit_2(tmp_path, synthetic, capsys):
    out = str(tmp_path / "r")
    other_queries = write_synthetic(tmp_path, "elsewhere", np.ones(300), qids=np.arange(300) + 1000)
    cases = [
        (["--metrics", str(other_queries)], "same queries"),
        (["--metrics", str(synthetic["better"]), "--names", "a", "b", "c"], "--names"),
        (["--metrics", str(tmp_path / "nope.metrics.json")], "no such file"),
        (["--metrics", str(synthetic["base"])], "two models are named"),
    ]
    for extra, message in cases:
        assert report.main(["--baseline", str(synthetic["base"]), "--output-dir", out, *extra]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "better.per_query.parquet").unlink()
    assert report.main(["--baseline", str(synthetic["base"]), "--metrics", str(synthetic["better"]),
                        "--output-dir", out]) == 2
    assert "per-query file" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.md").exists()


def test_interrupted_search_resumes_to_the_same_result(tmp_path, tiny_model, tiny_data, monkeypatch):
    import msmarco_ft.search as search

    out = tmp_path / "evals"
    argv = eval_argv(tiny_model, tiny_data, out, "--cache-dir", "none")
    assert eval_model.main(argv) == 0
    expected = pd.read_parquet(out / "tiny-model.run.parquet")
    real_encode, calls = search.encode_texts, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # queries, chunk 1, chunk 2, then the user presses Ctrl-C
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(search, "encode_texts", interrupted)
    assert eval_model.main(argv + ["--overwrite"]) == 130
    assert (out / ".tiny-model.state").is_dir()
    monkeypatch.setattr(search, "encode_texts", real_encode)
    assert eval_model.main(argv + ["--resume"]) == 0
    timing = json.loads((out / "tiny-model.metrics.json").read_text())["timing"]
    assert timing["resumed_from_chunk"] == 2
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tiny-model.run.parquet"), expected)
    assert not (out / ".tiny-model.state").exists()


def test_resampling_agrees_with_scipy_within_monte_carlo_error():
    from scipy import stats

    rng = np.random.default_rng(11)
    base = rng.choice([0.0, 0.2, 0.5, 1.0], size=400)
    system = np.where(rng.random(400) < 0.015, 1.0, base)  # p near 0.05: where the answer matters
    ours = paired_randomization_test(system, base, n_resamples=4000, seed=2)["p_value"]
    theirs = stats.permutation_test((system - base,), lambda x, axis: x.mean(axis=axis), permutation_type="samples",
                                    vectorized=True, n_resamples=4000, rng=np.random.default_rng(5)).pvalue
    assert 0.001 < theirs < 0.5 and abs(ours - theirs) < 0.03
    low, high = bootstrap_ci(base, n_resamples=4000, seed=2)
    ci = stats.bootstrap((base,), np.mean, n_resamples=4000, method="percentile",
                         rng=np.random.default_rng(5)).confidence_interval
    assert abs(low - ci.low) < 0.01 and abs(high - ci.high) < 0.01


def test_report_accepts_an_evaluation_folder_holding_one_metrics_file(tmp_path, synthetic, capsys):
    folder = tmp_path / "only"
    folder.mkdir()
    write_synthetic(folder, "solo", np.linspace(0, 1, 300))
    assert report.main(["--baseline", str(synthetic["base"]), "--metrics", str(folder),
                        "--output-dir", str(tmp_path / "r"), "--resamples", "200"]) == 0
    assert [m["name"] for m in json.loads((tmp_path / "r" / "report.json").read_text())["models"]] == ["base", "solo"]
    assert report.main(["--baseline", str(tmp_path), "--output-dir", str(tmp_path / "r2")]) == 2
    assert "metrics.json files; name the file itself" in capsys.readouterr().err
