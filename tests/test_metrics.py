"""Metrics pinned to hand-worked cases, and agreement with ir-measures on random runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from msmarco_ft.metrics import evaluate_run, mrr_at_k
from tests.conftest import write_lines


def qrels_frame(rows):
    return pd.DataFrame(rows, columns=["qid", "pid", "rel"]).astype({"qid": np.int64, "pid": np.int64,
                                                                      "rel": np.int32})


def run_frame(rows):
    frame = pd.DataFrame(rows, columns=["qid", "pid", "rank"]).astype({"qid": np.int64, "pid": np.int64,
                                                                       "rank": np.int32})
    frame["score"] = (1000.0 - frame["rank"]).astype(np.float32)
    return frame


def ranked(qid, pids):
    return [(qid, pid, rank) for rank, pid in enumerate(pids, start=1)]


def test_hit_at_rank_10_counts_and_rank_11_does_not():
    qrels = qrels_frame([(1, 110, 1), (2, 211, 1)])
    run = run_frame(ranked(1, range(101, 111)) + ranked(2, range(201, 212)))
    metrics, per_query = evaluate_run(qrels, run)
    assert per_query.set_index("qid")["rr@10"].to_dict() == {1: pytest.approx(0.1), 2: 0.0}
    assert per_query.set_index("qid")["rr@100"].to_dict() == {1: pytest.approx(0.1), 2: pytest.approx(1 / 11)}
    assert metrics["MRR@10"] == pytest.approx(0.05)
    assert metrics["MRR@100"] == pytest.approx((0.1 + 1 / 11) / 2)
    assert metrics["Recall@10"] == pytest.approx(0.5)
    assert mrr_at_k(qrels, run, 10) == pytest.approx(0.05)


def test_only_the_first_of_two_relevant_passages_counts():
    qrels = qrels_frame([(1, 12, 1), (1, 14, 1)])
    run = run_frame(ranked(1, [11, 12, 13, 14]))
    metrics, per_query = evaluate_run(qrels, run)
    assert metrics["MRR@10"] == pytest.approx(0.5)
    assert metrics["Recall@10"] == pytest.approx(1.0)
    ideal = 1 + 1 / math.log2(3)
    assert metrics["nDCG@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert per_query["first_relevant_rank"].tolist() == [2]


def test_query_missing_from_run_counts_zero_in_the_denominator():
    qrels = qrels_frame([(1, 11, 1), (2, 21, 1), (3, 31, 0)])
    run = run_frame(ranked(1, [11, 12]))
    metrics, per_query = evaluate_run(qrels, run)
    assert metrics["MRR@10"] == pytest.approx(0.5)
    assert metrics["queries"]["qrels"] == 2  # query 3 has no relevant passage
    assert metrics["queries"]["qrels_without_relevant"] == 1
    assert metrics["queries"]["qrels_only"] == 1
    assert per_query["qid"].tolist() == [1, 2]


def test_duplicate_passage_counts_once_at_its_first_rank():
    qrels = qrels_frame([(1, 13, 1), (1, 99, 1)])
    run = run_frame([(1, 11, 1), (1, 13, 2), (1, 13, 3), (1, 12, 4)])
    metrics, _ = evaluate_run(qrels, run)
    assert metrics["MRR@10"] == pytest.approx(0.5)
    assert metrics["Recall@10"] == pytest.approx(0.5)  # not 2 of 2
    ideal = 1 + 1 / math.log2(3)
    assert metrics["nDCG@10"] == pytest.approx((1 / math.log2(3)) / ideal)


def test_run_only_queries_are_ignored_unless_asked_for():
    qrels = qrels_frame([(1, 11, 1)])
    run = run_frame(ranked(1, [11]) + ranked(5, [51]))
    official, _ = evaluate_run(qrels, run)
    assert official["MRR@10"] == pytest.approx(1.0)
    assert official["queries"] == {"qrels": 1, "run": 2, "both": 1, "qrels_only": 0, "run_only": 1,
                                   "qrels_without_relevant": 0, "evaluated": 1, "from": "qrels", "depth": 1}
    original, per_query = evaluate_run(qrels, run, queries_from="run")
    assert original["MRR@10"] == pytest.approx(0.5)
    assert per_query["qid"].tolist() == [1, 5]


def test_ranks_come_from_the_rank_column_not_row_order():
    qrels = qrels_frame([(1, 13, 1)])
    run = run_frame([(1, 13, 3), (1, 11, 1), (1, 12, 2)])
    assert mrr_at_k(qrels, run, 10) == pytest.approx(1 / 3)


def test_graded_relevance_uses_linear_gain():
    qrels = qrels_frame([(1, 11, 1), (1, 12, 3)])
    run = run_frame(ranked(1, [11, 12]))
    metrics, _ = evaluate_run(qrels, run)
    assert metrics["nDCG@10"] == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))


def test_recall_at_1000_only_for_deep_runs():
    qrels = qrels_frame([(1, 150, 1)])
    shallow, _ = evaluate_run(qrels, run_frame(ranked(1, range(1, 101))))
    deep, _ = evaluate_run(qrels, run_frame(ranked(1, range(1, 201))))
    assert "Recall@1000" not in shallow
    assert deep["Recall@1000"] == pytest.approx(1.0) and deep["Recall@100"] == 0.0


def random_case(seed, n_queries=40, n_passages=400, depth=120):
    """Runs without ties or duplicates: ir-measures ranks by score (ties by docid), we by the rank column."""
    rng = np.random.default_rng(seed)
    qrel_rows, run_rows = [], []
    for qid in range(n_queries):
        relevant = rng.choice(n_passages, size=rng.integers(1, 4), replace=False)
        qrel_rows += [(qid, int(pid), int(rng.integers(1, 4))) for pid in relevant]
        qrel_rows += [(qid, int(pid), 0) for pid in rng.choice(n_passages, size=2, replace=False)
                      if pid not in relevant]
        run_rows += ranked(qid, rng.permutation(n_passages)[:rng.integers(5, depth)].tolist())
    run = run_frame(run_rows)
    run["score"] = (-run["rank"].to_numpy() + rng.random() * 0.5).astype(np.float64)
    return qrels_frame(qrel_rows), run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_ir_measures_on_random_runs(seed):
    import ir_measures
    from ir_measures import RR, R, nDCG

    qrels, run = random_case(seed)
    metrics, per_query = evaluate_run(qrels, run)
    ir_qrels = pd.DataFrame({"query_id": qrels["qid"].astype(str), "doc_id": qrels["pid"].astype(str),
                             "relevance": qrels["rel"].astype(int)})
    ir_run = pd.DataFrame({"query_id": run["qid"].astype(str), "doc_id": run["pid"].astype(str),
                           "score": run["score"]})
    theirs = ir_measures.calc_aggregate([RR @ 10, RR @ 100, nDCG @ 10, R @ 100], ir_qrels, ir_run)
    assert metrics["queries"]["qrels_only"] == 0  # ir-measures averages over queries present in the run
    assert abs(metrics["MRR@10"] - theirs[RR @ 10]) < 1e-9
    assert abs(metrics["MRR@100"] - theirs[RR @ 100]) < 1e-9
    assert abs(metrics["nDCG@10"] - theirs[nDCG @ 10]) < 1e-9
    assert abs(metrics["Recall@100"] - theirs[R @ 100]) < 1e-9
    by_query = {(m.query_id, str(m.measure)): m.value
                for m in ir_measures.iter_calc([RR @ 10, nDCG @ 10], ir_qrels, ir_run)}
    for qid, rr, ndcg in zip(per_query["qid"], per_query["rr@10"], per_query["ndcg@10"]):
        assert abs(rr - by_query[(str(qid), "RR@10")]) < 1e-9
        assert abs(ndcg - by_query[(str(qid), "nDCG@10")]) < 1e-9


def test_bad_rank_is_an_input_error():
    from msmarco_ft.errors import InputError

    with pytest.raises(InputError, match="below 1"):
        evaluate_run(qrels_frame([(1, 1, 1)]), run_frame([(1, 1, 0)]))


# ---------------------------------------------------------------- mrr_calculator.py


@pytest.fixture
def judged_files(tmp_path):
    from msmarco_ft.formats import write_table, write_trec

    qrels, run = random_case(5, n_queries=12)
    run = run[run["qid"] != 11].reset_index(drop=True)  # one judged query left unanswered
    write_lines(tmp_path / "qrels.dev.small.tsv", [f"{q} 0 {p} {r}" for q, p, r in qrels.itertuples(index=False)])
    for name in ("run.tsv", "run.parquet"):
        write_table(run, tmp_path / name, "run")
    write_trec(run, tmp_path / "run.trec", "test")
    return tmp_path, qrels, run


def test_mrr_calculator_reads_every_run_format_alike(judged_files, capsys):
    import mrr_calculator

    folder, qrels, run = judged_files
    expected, _ = evaluate_run(qrels, run)
    for name in ("run.tsv", "run.parquet", "run.trec"):
        out = folder / f"{name}.metrics.json"
        assert mrr_calculator.main(["--qrels", str(folder / "qrels.dev.small.tsv"), "--run", str(folder / name),
                                    "--output", str(out)]) == 0
        body = json.loads(out.read_text())
        for key in ("MRR@10", "MRR@100", "Recall@100", "nDCG@10"):
            assert body["metrics"][key] == pytest.approx(expected[key], abs=1e-6)
        assert (folder / f"{name}.per_query.parquet").exists()
    printed = capsys.readouterr()
    assert "12 in qrels, 11 in run, 11 in both" in printed.out
    assert "query sets differ" in printed.err


def test_mrr_calculator_with_no_arguments_uses_the_default_names(judged_files, monkeypatch, capsys):
    import mrr_calculator

    folder, qrels, run = judged_files
    (folder / "evaluation-results").mkdir()
    (folder / "run.parquet").rename(folder / "evaluation-results" / "base.run.parquet")
    monkeypatch.chdir(folder)
    assert mrr_calculator.main([]) == 0
    printed = capsys.readouterr().out
    assert "evaluation-results/base.run.parquet" in printed
    expected = f"{evaluate_run(qrels, run)[0]['MRR@10']:.4f}"
    assert ["MRR@10", expected] in [line.split() for line in printed.splitlines()]
    assert mrr_calculator.main(["--queries-from", "run"]) == 0
    assert "denominator 11 (from run)" in capsys.readouterr().out


def test_mrr_calculator_bad_inputs_exit_2(judged_files, capsys):
    import mrr_calculator

    folder, _, _ = judged_files
    qrels = str(folder / "qrels.dev.small.tsv")
    bad_rank = write_lines(folder / "bad.tsv", ["query_id\tpassage_id\trank\tscore", "1\t2\t0\t0.5"])
    cases = [(["--qrels", qrels, "--run", str(bad_rank)], f"{bad_rank}:2: rank 0 is below 1"),
             (["--qrels", qrels, "--run", str(folder / "missing.tsv")], "no such file"),
             (["--qrels", str(folder / "run.tsv"), "--run", str(folder / "run.tsv")], "run.tsv:1:"),
             (["--run", str(folder / "run.tsv")], "no --qrels given"),
             (["--qrels", str(write_lines(folder / "zero.tsv", ["1 0 2 0"])), "--run", str(folder / "run.tsv")],
              "no relevant judgement")]
    for argv, message in cases:
        assert mrr_calculator.main(argv) == 2
        assert message in capsys.readouterr().err
    out = folder / "m.json"
    out.write_text("{}")
    assert mrr_calculator.main(["--qrels", qrels, "--run", str(folder / "run.tsv"), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_mrr_calculator_reads_a_run_longer_than_one_chunk(tmp_path, capsys):
    import mrr_calculator
    from msmarco_ft.formats import CHUNK_ROWS, write_table

    n = CHUNK_ROWS // 100 + 1
    run = run_frame([(qid, pid, rank) for qid in range(n) for rank, pid in enumerate(range(100), start=1)])
    write_table(run, tmp_path / "run.parquet", "run")
    write_lines(tmp_path / "qrels.tsv", [f"{qid} 0 {qid % 100} 1" for qid in range(n)])
    assert mrr_calculator.main(["--qrels", str(tmp_path / "qrels.tsv"), "--run", str(tmp_path / "run.parquet")]) == 0
    expected = np.mean([1 / (qid % 100 + 1) for qid in range(n)])
    assert ["MRR@100", f"{expected:.4f}"] in [line.split() for line in capsys.readouterr().out.splitlines()]
