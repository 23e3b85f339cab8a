"""visualize.py on a tiny model: sampling, cosine numbers, PNGs and JSON, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_lines

import visualize
from msmarco_ft import visual
from msmarco_ft.formats import read_table

WORDS = ["river", "castle", "violin", "orchid", "falcon", "harbor", "copper", "meadow", "glacier", "lantern"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz")
    rng = np.random.default_rng(3)
    passages = [f"{i}\t{WORDS[i % 10]} {WORDS[(i * 3) % 10]} passage number {i} about {WORDS[(i * 7) % 10]}"
                for i in range(80)]
    queries = [f"{100 + q}\twhat about the {WORDS[q % 10]} {WORDS[(q + 4) % 10]}" for q in range(25)]
    qrels = [f"{100 + q} 0 {q * 3} 1" for q in range(25)] + ["100 0 5 1"]  # query 100 has two positives
    run_lines = ["query_id\tpassage_id\trank\tscore"]
    for q in range(25):
        for rank, pid in enumerate(rng.permutation(80)[:70], start=1):
            run_lines.append(f"{100 + q}\t{pid}\t{rank}\t{1 - rank / 100:.4f}")
    return {"collection": write_lines(root / "collection.tsv", passages),
            "queries": write_lines(root / "queries.tsv", queries),
            "qrels": write_lines(root / "qrels.tsv", qrels),
            "run": write_lines(root / "run.tsv", run_lines)}


def _argv(data, tiny_model, out, *extra):
    return ["--models", str(tiny_model), str(tiny_model), "--names", "base", "tuned",
            "--queries", str(data["queries"]), "--collection", str(data["collection"]), "--qrels", str(data["qrels"]),
            "--num-queries", "12", "--n-epochs", "20", "--n-neighbors", "5", "--device", "cpu",
            "--output-dir", str(out), *extra]


def test_sample_points_takes_hard_negatives_from_the_run_window(data):
    queries, qrels = read_table(data["queries"], "queries"), read_table(data["qrels"], "qrels")
    run = read_table(data["run"], "run")
    sample = visual.sample_points(queries, qrels, data["collection"], run, num_queries=10, negatives_per_query=3,
                                  rank_min=50, rank_max=60, seed=1)
    again = visual.sample_points(queries, qrels, data["collection"], run, num_queries=10, negatives_per_query=3,
                                 rank_min=50, rank_max=60, seed=1)
    assert again.negatives == sample.negatives and list(again.qids) == list(sample.qids)
    assert len(sample.queries) == len(sample.positives) == 10
    assert len(sample.negatives) == 30 and sorted(set(sample.owner.tolist())) == list(range(10))
    judged = set(zip(qrels["qid"], qrels["pid"]))
    window = run[run["rank"].between(50, 60)]
    allowed = set(zip(window["qid"], window["pid"]))
    texts = dict(zip(*[read_table(data["collection"], "collection")[c] for c in ("text", "pid")]))
    for owner, text in zip(sample.owner, sample.negatives):
        pair = (int(sample.qids[owner]), int(texts[text]))
        assert pair in allowed and pair not in judged
    # The lowest-pid positive of query 100 (pids 0 and 5) is chosen when it is sampled.
    if 100 in sample.qids:
        assert sample.positives[list(sample.qids).index(100)].startswith("river river passage number 0 ")


def test_cosine_stats_on_known_vectors():
    sample = visual.Sample(qids=np.array([1, 2]), queries=["a", "b"], positives=["c", "d"], negatives=["e", "f", "g"],
                           owner=np.array([0, 0, 1]), negative_source="test")
    emb = np.array([[1, 0], [0, 1],  # queries
                    [1, 0], [0, 2],  # positives: cosine 1 and 1 (unnormalised on purpose)
                    [0, 1], [1, 1], [0, -3]], dtype=np.float32)  # negatives: 0, 0.7071, -1
    stats = visual.cosine_stats(emb, sample)
    assert stats["mean_cos_query_positive"] == pytest.approx(1.0)
    assert stats["mean_cos_query_negative"] == pytest.approx((0 + 2 ** -0.5 - 1) / 3)
    assert stats["gap"] == pytest.approx(1.0 - (0 + 2 ** -0.5 - 1) / 3)
    assert stats["positive_beats_negatives"] == 1.0


def test_visualize_writes_pictures_and_numbers(data, tiny_model, tmp_path, capsys):
    out = tmp_path / "umap"
    assert visualize.main(_argv(data, tiny_model, out, "--run", str(data["run"]), "--rank-max", "70")) == 0
    for name in ("base.png", "tuned.png", "comparison.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(out / "comparison.png").shape[:2]
    assert width > 1.5 * height  # two panels side by side
    stats = json.loads((out / "cosine_stats.json").read_text())
    assert [m["name"] for m in stats["models"]] == ["base", "tuned"]
    assert stats["negatives"] == "run ranks 50-70" and stats["sample"]["queries"] == 12
    base, tuned = stats["models"]
    assert base["gap"] == pytest.approx(base["mean_cos_query_positive"] - base["mean_cos_query_negative"])
    assert base["mean_cos_query_positive"] == pytest.approx(tuned["mean_cos_query_positive"])  # same weights
    assert json.loads((out / "config.json").read_text())["arguments"]["fit"] == "shared"
    printed = capsys.readouterr().out
    assert "base" in printed and "tuned" in printed and f"{base['gap']:+.4f}" in printed

    # Per-model fits and random negatives also work, and existing outputs are protected.
    assert visualize.main(_argv(data, tiny_model, out, "--fit", "per-model")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert visualize.main(_argv(data, tiny_model, out, "--fit", "per-model", "--overwrite")) == 0
    stats = json.loads((out / "cosine_stats.json").read_text())
    assert stats["negatives"] == "random collection passages" and stats["fit"] == "per-model"


def test_bad_input_is_one_line_and_exit_2(data, tiny_model, tmp_path, capsys):
    argv = _argv(data, tiny_model, tmp_path / "a")
    names = argv.index("--names")
    assert visualize.main(argv[:names + 2] + argv[names + 3:]) == 2
    assert "--names gives 1 label(s) for 2 model(s)" in capsys.readouterr().err
    bad_qrels = write_lines(tmp_path / "bad.qrels", ["100 0 7 x"])
    argv = _argv(data, tiny_model, tmp_path / "b")
    argv[argv.index("--qrels") + 1] = str(bad_qrels)
    assert visualize.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.qrels:1" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_shared_fit_refuses_models_of_different_sizes():
    with pytest.raises(visual.InputError, match="per-model"):
        visual.project([np.ones((6, 4), np.float32), np.ones((6, 8), np.float32)], fit="shared")


def test_missing_passage_is_named(data, tmp_path):
    queries, qrels = read_table(data["queries"], "queries"), read_table(data["qrels"], "qrels")
    qrels = pd.concat([qrels, pd.DataFrame({"qid": [100], "pid": [-9], "rel": [1]})], ignore_index=True)
    qrels = qrels[qrels["qid"] == 100]
    with pytest.raises(visual.InputError, match="pid -9"):
        visual.sample_points(queries, qrels, data["collection"], None, num_queries=1)
