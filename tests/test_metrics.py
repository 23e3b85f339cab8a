"""Metrics pinned to hand-worked cases, and agreement with ir-measures on random runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from msmarco_ft.metrics import evaluate_run, mrr_at_k


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
