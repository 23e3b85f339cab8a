"""random_sample.py and train_data_creator.py: windows, positives, margins, determinism, joins, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import random_sample
import train_data_creator
from msmarco_ft import formats
from msmarco_ft.negatives import sample_negatives
from msmarco_ft.triplets import build_triplets, count_rows


def make_run(n_queries=4, depth=10):
    """Query q (100, 101, ...) ranks pids q*1000 + r at rank r with score 1 - r/100."""
    qid = np.repeat(np.arange(100, 100 + n_queries), depth)
    rank = np.tile(np.arange(1, depth + 1), n_queries)
    return pd.DataFrame({"qid": qid, "pid": qid * 1000 + rank, "rank": rank.astype(np.int32),
                         "score": (1 - rank / 100).astype(np.float32)})


def qrels_of(pairs):
    return pd.DataFrame({"qid": [q for q, _ in pairs], "pid": [p for _, p in pairs], "rel": 1})


def test_window_is_respected_and_positives_never_drawn():
    run = make_run()
    qrels = qrels_of([(100, 100004), (100, 100005), (101, 101003)])
    negatives, stats = sample_negatives(run, qrels, rank_min=3, rank_max=6, per_query=10)
    assert negatives["rank"].between(3, 6).all()
    assert not {(100, 100004), (100, 100005), (101, 101003)} & set(zip(negatives["qid"], negatives["pid"]))
    assert stats["dropped_positive"] == 3 and stats["rows_in_window"] == 16
    assert negatives.groupby("qid").size().to_dict() == {100: 2, 101: 3, 102: 4, 103: 4}
    assert stats["queries_with_fewer_than_requested"] == 4


def test_queries_without_candidates_are_counted():
    run = make_run(n_queries=2, depth=10)
    qrels = qrels_of([(100, 100000 + r) for r in range(5, 9)])
    negatives, stats = sample_negatives(run, qrels, rank_min=5, rank_max=8)
    assert negatives["qid"].tolist() == [101]
    assert stats["queries_without_candidate"] == 1 and stats["queries_without_candidate_examples"] == [100]


def test_margins_drop_candidates_too_close_to_the_positive():
    run = make_run(n_queries=2, depth=10)  # scores 0.99 .. 0.90
    qrels = qrels_of([(100, 555), (101, 556)])
    positive_scores = pd.DataFrame({"qid": [100, 100], "pid": [555, 777], "score": np.float32([0.98, 0.95])})
    # Query 100's lowest positive scores 0.95: margin 0.02 keeps only scores <= 0.93 (ranks 7-10);
    # query 101 has no recorded positive score, so the margin cannot apply to it.
    negatives, stats = sample_negatives(run, qrels, rank_min=1, rank_max=10, per_query=10,
                                        positive_scores=positive_scores, margin=0.02)
    assert sorted(negatives.loc[negatives["qid"] == 100, "rank"]) == [7, 8, 9, 10]
    assert (negatives["qid"] == 101).sum() == 10
    assert stats["dropped_margin"] == 6 and stats["queries_without_positive_score"] == 1
    negatives, stats = sample_negatives(run, qrels, rank_min=1, rank_max=10, per_query=10,
                                        positive_scores=positive_scores, relative_margin=0.04)
    # (1 - 0.04) * 0.95 = 0.912: ranks 9 and 10 (0.91, 0.90) survive.
    assert sorted(negatives.loc[negatives["qid"] == 100, "rank"]) == [9, 10]
    assert stats["dropped_relative_margin"] == 8


def test_draw_is_deterministic_and_independent_of_row_order():
    run = make_run(n_queries=50, depth=200)
    qrels = qrels_of([(100, 100060)])
    first, _ = sample_negatives(run, qrels, per_query=3, seed=7)
    shuffled, _ = sample_negatives(run.sample(frac=1, random_state=1), qrels, per_query=3, seed=7)
    other, _ = sample_negatives(run, qrels, per_query=3, seed=8)
    pd.testing.assert_frame_equal(first, shuffled)
    assert not first.equals(other)
    assert first["rank"].between(50, 200).all() and first.groupby("qid").size().eq(3).all()
    assert list(first.columns) == ["qid", "pid", "rank"]
    assert first.sort_values(["qid", "rank"]).index.tolist() == list(range(len(first)))


def test_script_runs_without_arguments_in_a_prepared_folder(tmp_path, monkeypatch):
    run = make_run(n_queries=3, depth=200)
    formats.write_table(run, tmp_path / "base_model_train_top200_results.tsv", "run")
    formats.write_table(qrels_of([(100, 100070)]), tmp_path / "sorted_qrels.train.tsv", "qrels")
    monkeypatch.chdir(tmp_path)
    assert random_sample.main([]) == 0
    lines = (tmp_path / "random_samples.tsv").read_text().splitlines()
    assert lines[0] == "query_id\tpassage_id\trank" and len(lines) == 4
    negatives = formats.read_table(tmp_path / "random_samples.tsv", "negatives")
    assert negatives["qid"].tolist() == [100, 101, 102] and negatives["rank"].between(50, 200).all()
    summary = json.loads((tmp_path / "random_samples.tsv.config.json").read_text())["summary"]
    assert summary["negatives"] == 3
    assert random_sample.main([]) == 2  # output exists: refused without --overwrite
    assert random_sample.main(["--resume"]) == 0  # complete and current: nothing to do


def test_random_sample_bad_input(tmp_path, capsys):
    run_path = formats.write_table(make_run(), tmp_path / "run.tsv", "run")
    qrels_path = formats.write_table(qrels_of([(100, 1)]), tmp_path / "qrels.tsv", "qrels")
    base = ["--run", str(run_path), "--qrels", str(qrels_path), "--output", str(tmp_path / "neg.tsv")]
    assert random_sample.main(base + ["--margin", "0.1"]) == 2  # no positive-scores sidecar next to the run
    assert "positive_scores" in capsys.readouterr().err
    (tmp_path / "broken_run.tsv").write_text("query_id\tpassage_id\trank\tscore\n1\t2\tthree\t0.5\n")
    assert random_sample.main(base[:0] + ["--run", str(tmp_path / "broken_run.tsv")] + base[2:]) == 2
    assert "broken_run.tsv:2: rank 'three' is not an integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        random_sample.main(base + ["--rank-min", "10", "--rank-max", "5"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "neg.tsv").exists()


# ---------------------------------------------------------------- triplets


@pytest.fixture()
def triplet_data(tmp_path):
    collection = pd.DataFrame({"pid": np.arange(1, 41, dtype=np.int64),
                               "text": [f"passage {i}" for i in range(1, 41)]})
    queries = pd.DataFrame({"qid": [7, 3, 9], "text": ["query seven", "query three", "query nine"]})
    qrels = qrels_of([(3, 1), (7, 2), (7, 5), (9, 6)])  # query 7 has two positives
    negatives = pd.DataFrame({"qid": [3, 7, 7, 9], "pid": [10, 12, 11, 6], "rank": [60, 50, 90, 70]})
    paths = {"collection": tmp_path / "collection.tsv", "queries": tmp_path / "queries.tsv",
             "qrels": tmp_path / "qrels.tsv", "negatives": tmp_path / "negatives.tsv"}
    for kind, frame in (("collection", collection), ("queries", queries), ("qrels", qrels),
                        ("negatives", negatives)):
        formats.write_table(frame, paths[kind], kind)
    return paths


def create(paths, out_dir, *extra):
    return train_data_creator.main(["--filtered-queries", str(paths["queries"]), "--qrels", str(paths["qrels"]),
                                    "--collection", str(paths["collection"]), "--output-dir", str(out_dir),
                                    "--chunk-size", "7", *extra])


def test_triplets_join_every_positive_with_every_negative(triplet_data, tmp_path):
    assert create(triplet_data, tmp_path / "out", "--random-samples", str(triplet_data["negatives"])) == 0
    lines = (tmp_path / "out" / "triples.train.hard_negatives.tsv").read_text().splitlines()
    # Query order as in the queries file; query 9's only negative is its own positive and is dropped.
    assert lines == ["query seven\tpassage 2\tpassage 12", "query seven\tpassage 2\tpassage 11",
                     "query seven\tpassage 5\tpassage 12", "query seven\tpassage 5\tpassage 11",
                     "query three\tpassage 1\tpassage 10"]
    summary = json.loads((tmp_path / "out" / "triples.train.hard_negatives.tsv.config.json").read_text())["summary"]
    assert summary["dropped_negative_is_positive"] == 1 and summary["triplets"] == 5


def test_first_positive_only_and_parquet_output(triplet_data, tmp_path):
    assert create(triplet_data, tmp_path, "--random-samples", str(triplet_data["negatives"]), "--positives", "first",
                  "--output-file", "t.parquet") == 0
    triplets = formats.read_table(tmp_path / "t.parquet", "triplets")
    assert triplets["positive"].tolist() == ["passage 2", "passage 2", "passage 1"]


def test_random_negatives_are_uniform_seeded_and_never_positive(triplet_data, tmp_path):
    queries = pd.DataFrame({"qid": np.arange(30), "text": [f"q{i}" for i in range(30)]})
    qrels = qrels_of([(q, q + 1) for q in range(30)])
    args = dict(random_negatives=True, negatives_per_query=5, chunk_rows=9)
    first, stats = build_triplets(queries, qrels, triplet_data["collection"], seed=1, **args)
    again, _ = build_triplets(queries, qrels, triplet_data["collection"], seed=1, **args)
    other, _ = build_triplets(queries, qrels, triplet_data["collection"], seed=2, **args)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert len(first) + stats["dropped_random_negative_is_positive"] == 150
    assert (first["positive"] != first["negative"]).all()
    assert first["negative"].nunique() > 25  # spread over the 40-passage collection
    assert create(triplet_data, tmp_path, "--random-negatives", "--output-file", "r.tsv") == 0
    assert len((tmp_path / "r.tsv").read_text().splitlines()) == 4  # one per positive


def test_count_rows_handles_a_missing_final_newline(tmp_path):
    (tmp_path / "c.tsv").write_text("1\ta\n2\tb")
    assert count_rows(tmp_path / "c.tsv") == 2


def test_triplets_bad_input(triplet_data, tmp_path, capsys):
    (tmp_path / "neg_bad.tsv").write_text("query_id\tpassage_id\trank\n3\t10\n")
    assert create(triplet_data, tmp_path, "--random-samples", str(tmp_path / "neg_bad.tsv")) == 2
    assert "neg_bad.tsv:2: expected 3 tab-separated columns" in capsys.readouterr().err
    assert create(triplet_data, tmp_path, "--random-samples", str(tmp_path / "missing.tsv")) == 2
    assert not (tmp_path / "triples.train.hard_negatives.tsv").exists()
