"""MRR@k with the official MS MARCO rules, Recall@k and nDCG@10, vectorised over whole runs.

Rules (the same as the official ``msmarco_eval.py`` where it has one):

- a passage is relevant when its qrels ``rel`` is > 0;
- the denominator is every query in the qrels with at least one relevant passage (``queries_from="qrels"``);
  a query missing from the run scores 0. ``queries_from="run"`` averages over the queries in the run
  instead (the original project's denominator); a run query without relevant passages then scores 0;
- only the first relevant passage within the cutoff counts for RR;
- positions come from the run's ``rank`` column (1-based), never from row order;
- a passage listed twice for one query counts once, at its best (first) rank;
- nDCG@10 uses linear gain (gain = rel, as trec_eval's ``ndcg_cut``) and a log2(rank + 1) discount; the
  ideal ranking is built from all the query's judged passages.

Only run rows that hit a relevant passage are joined (after a cheap ``np.isin`` pre-filter), so a
7M-row run (6,980 queries x 1000) costs a few seconds, not a Python loop per query.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError

RR_CUTOFFS = (10, 100)
RECALL_CUTOFFS = (10, 100, 1000)
NDCG_CUTOFF = 10
QUERIES_FROM = ("qrels", "run")


def check_run(run: pd.DataFrame, path=None) -> None:
    """Ranks must be 1-based positive integers: anything else is a user-fixable input problem."""
    ranks = run["rank"].to_numpy()
    bad = np.flatnonzero(ranks < 1)
    if bad.size:
        lines = run.attrs.get("lines")
        line = int(lines[bad[0]]) if lines is not None and len(lines) == len(run) else None
        raise InputError(path, f"rank {ranks[bad[0]]} is below 1 (ranks are 1-based)", line)


def relevant_qrels(qrels: pd.DataFrame) -> pd.DataFrame:
    """Relevant judgements (rel > 0), one row per (qid, pid) with the highest grade given."""
    keep = qrels["rel"].to_numpy() > 0
    # Rebuilt from arrays: frames from formats.read_table carry attrs (line numbers) that pandas cannot
    # compare when it concatenates.
    rel = pd.DataFrame({c: qrels[c].to_numpy()[keep].astype(np.int64) for c in ("qid", "pid", "rel")})
    return rel.groupby(["qid", "pid"], sort=True, as_index=False)["rel"].max()


def _hits(rel: pd.DataFrame, run: pd.DataFrame) -> pd.DataFrame:
    """Run rows that retrieve a relevant passage: (qid, pid, rel, rank), duplicates kept at their best rank."""
    pids = run["pid"].to_numpy()
    keep = np.isin(pids, rel["pid"].to_numpy())
    candidates = pd.DataFrame({"qid": run["qid"].to_numpy()[keep].astype(np.int64), "pid": pids[keep].astype(np.int64),
                               "rank": run["rank"].to_numpy()[keep].astype(np.int64)})
    hits = candidates.merge(rel, on=["qid", "pid"], how="inner")
    return hits.groupby(["qid", "pid"], sort=True, as_index=False).agg(rank=("rank", "min"), rel=("rel", "first"))


def _per_query_sum(hits: pd.DataFrame, values: np.ndarray, index: pd.Index) -> np.ndarray:
    sums = pd.Series(values, index=hits["qid"].to_numpy()).groupby(level=0).sum()
    return sums.reindex(index, fill_value=0).to_numpy(dtype=np.float64)


def _reciprocal_ranks(hits: pd.DataFrame, index: pd.Index, k: int) -> np.ndarray:
    first = hits.groupby("qid")["rank"].min().reindex(index)
    ranks = first.to_numpy(dtype=np.float64)
    return np.where(ranks <= k, 1.0 / ranks, 0.0)  # NaN (query not hit) compares False -> 0


def _ndcg(rel: pd.DataFrame, hits: pd.DataFrame, index: pd.Index, k: int) -> np.ndarray:
    top = hits[hits["rank"].to_numpy() <= k]
    dcg = _per_query_sum(top, top["rel"].to_numpy() / np.log2(top["rank"].to_numpy() + 1.0), index)
    ideal = rel.sort_values(["qid", "rel"], ascending=[True, False], kind="stable")
    position = ideal.groupby("qid").cumcount().to_numpy() + 1
    ideal = ideal[position <= k]
    position = position[position <= k]
    idcg = _per_query_sum(ideal, ideal["rel"].to_numpy() / np.log2(position + 1.0), index)
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def query_counts(qrels: pd.DataFrame, run: pd.DataFrame) -> dict:
    """How many queries the qrels judge, the run answers, and both."""
    judged = np.unique(relevant_qrels(qrels)["qid"].to_numpy())
    answered = np.unique(run["qid"].to_numpy())
    both = np.intersect1d(judged, answered, assume_unique=True).size
    return {"qrels": int(judged.size), "run": int(answered.size), "both": int(both),
            "qrels_only": int(judged.size - both), "run_only": int(answered.size - both),
            "qrels_without_relevant": int(np.setdiff1d(np.unique(qrels["qid"].to_numpy()), judged).size)}


def run_depth(run: pd.DataFrame) -> int:
    """The most results any one query has (0 for an empty run)."""
    if run.empty:
        return 0
    return int(pd.Series(run["qid"].to_numpy()).value_counts().max())


def evaluate_run(qrels: pd.DataFrame, run: pd.DataFrame, queries_from: str = "qrels") -> tuple[dict, pd.DataFrame]:
    """Official-rules metrics over a whole run, and the per-query values they average.

    Returns ``({"MRR@10", "MRR@100", "Recall@10", "Recall@100", ["Recall@1000",] "nDCG@10", "queries": {...}},
    per_query)`` where ``per_query`` has one row per evaluated query: qid, rr@10, rr@100, recall@10,
    recall@100, [recall@1000,] ndcg@10 and first_relevant_rank (0 when no relevant passage was retrieved).
    Recall@1000 is reported only when some query has more than 100 results.
    """
    if queries_from not in QUERIES_FROM:
        raise ValueError(f"queries_from must be one of {QUERIES_FROM}, not {queries_from!r}")
    check_run(run)
    rel = relevant_qrels(qrels)
    counts = query_counts(qrels, run)
    depth = run_depth(run)
    source = rel["qid"] if queries_from == "qrels" else run["qid"]
    index = pd.Index(np.unique(source.to_numpy().astype(np.int64)), name="qid")
    hits = _hits(rel, run)
    hits = hits[hits["qid"].isin(index)]
    n_relevant = rel.groupby("qid").size().reindex(index, fill_value=0).to_numpy(dtype=np.float64)

    per_query = pd.DataFrame({"qid": index.to_numpy()})
    for k in RR_CUTOFFS:
        per_query[f"rr@{k}"] = _reciprocal_ranks(hits, index, k)
    recall_cutoffs = [k for k in RECALL_CUTOFFS if k <= 100 or depth > 100]
    for k in recall_cutoffs:
        found = _per_query_sum(hits, (hits["rank"].to_numpy() <= k).astype(np.float64), index)
        per_query[f"recall@{k}"] = np.divide(found, n_relevant, out=np.zeros_like(found), where=n_relevant > 0)
    per_query[f"ndcg@{NDCG_CUTOFF}"] = _ndcg(rel, hits, index, NDCG_CUTOFF)
    first = hits.groupby("qid")["rank"].min().reindex(index, fill_value=0)
    per_query["first_relevant_rank"] = first.to_numpy(dtype=np.int64)

    def mean(column: str) -> float:
        return float(per_query[column].mean()) if len(per_query) else 0.0

    metrics = {f"MRR@{k}": mean(f"rr@{k}") for k in RR_CUTOFFS}
    metrics.update({f"Recall@{k}": mean(f"recall@{k}") for k in recall_cutoffs})
    metrics[f"nDCG@{NDCG_CUTOFF}"] = mean(f"ndcg@{NDCG_CUTOFF}")
    metrics["queries"] = {**counts, "evaluated": len(per_query), "from": queries_from, "depth": depth}
    return metrics, per_query


def mrr_at_k(qrels: pd.DataFrame, run: pd.DataFrame, k: int = 10) -> float:
    """Official MS MARCO MRR@k: mean over the qrels' queries of 1/rank of the first relevant passage within k."""
    check_run(run)
    rel = relevant_qrels(qrels)
    index = pd.Index(np.unique(rel["qid"].to_numpy()), name="qid")
    if not len(index):
        return 0.0
    return float(_reciprocal_ranks(_hits(rel, run), index, k).mean())
