"""Hard negatives from a mined run: a rank window, never a judged positive, an optional false-negative guard.

Everything is vectorised over the whole run (tens of millions of rows at MS MARCO scale): (qid, pid)
pairs are compared as single int64 keys, and the per-query random draw is one sort by (qid, random
key) rather than a Python loop over queries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)


def positive_scores_path(run_path) -> Path:
    """The sidecar that ``process_train_queries.py --qrels`` writes next to its run."""
    run_path = Path(run_path)
    suffix = ".parquet" if run_path.suffix.lower() == ".parquet" else ".tsv"
    return run_path.with_name(f"{run_path.stem}.positive_scores{suffix}")


def judged_positives(qrels: pd.DataFrame) -> pd.DataFrame:
    """(qid, pid) of every judged positive (rel > 0), first occurrence kept, in file order."""
    judged = qrels["rel"].to_numpy() > 0
    # A fresh frame: the reader's per-row ``attrs["lines"]`` would trip pandas joins on a filtered copy.
    positives = pd.DataFrame({"qid": qrels["qid"].to_numpy(dtype=np.int64)[judged],
                              "pid": qrels["pid"].to_numpy(dtype=np.int64)[judged]})
    return positives.drop_duplicates().reset_index(drop=True)


def pair_keys(qid_arrays: list[np.ndarray], pid_arrays: list[np.ndarray]) -> list[np.ndarray]:
    """One int64 key per (qid, pid), comparable across the given arrays (ids are factorised jointly)."""
    qid_codes, _ = pd.factorize(np.concatenate(qid_arrays))
    pid_codes, pid_uniques = pd.factorize(np.concatenate(pid_arrays))
    keys = qid_codes.astype(np.int64) * max(len(pid_uniques), 1) + pid_codes
    return np.split(keys, np.cumsum([len(a) for a in qid_arrays])[:-1])


def sample_negatives(run: pd.DataFrame, qrels: pd.DataFrame, *, rank_min: int = 50, rank_max: int = 200,
                     per_query: int = 1, seed: int = 42, positive_scores: pd.DataFrame | None = None,
                     margin: float | None = None, relative_margin: float | None = None
                     ) -> tuple[pd.DataFrame, dict]:
    """Negatives (qid, pid, rank) drawn from ranks ``rank_min..rank_max`` (1-based, inclusive) of ``run``.

    Judged positives are never drawn. With ``positive_scores`` (qid, pid, score), ``margin`` M drops
    candidates scoring above ``p - M`` and ``relative_margin`` R those above ``(1 - R) * p``, where p is
    the lowest score among the query's judged positives: a candidate that outscores a known relevant
    passage (less the margin) is more likely an unjudged relevant one than a true negative.
    Returns the negatives, ordered by qid then rank, and counts of what was dropped and why.
    """
    order = np.lexsort((run["rank"].to_numpy(), run["qid"].to_numpy()))
    qid = run["qid"].to_numpy(dtype=np.int64)[order]
    pid = run["pid"].to_numpy(dtype=np.int64)[order]
    rank = run["rank"].to_numpy(dtype=np.int64)[order]
    score = run["score"].to_numpy(dtype=np.float32)[order]
    all_queries = np.unique(qid)
    stats = {"queries_in_run": int(len(all_queries)), "rows_in_run": int(len(qid))}

    keep = (rank >= rank_min) & (rank <= rank_max)
    stats["rows_in_window"] = int(keep.sum())

    positives = judged_positives(qrels)
    run_keys, positive_keys = pair_keys([qid, positives["qid"].to_numpy()], [pid, positives["pid"].to_numpy()])
    is_positive = keep & np.isin(run_keys, positive_keys)
    stats["dropped_positive"] = int(is_positive.sum())
    keep &= ~is_positive

    if margin is not None or relative_margin is not None:
        if positive_scores is None:
            raise InputError(None, "--margin/--relative-margin need the positive scores written by "
                                   "process_train_queries.py --qrels")
        reference = _lowest_positive_score(positive_scores, qid)
        known = ~np.isnan(reference)
        stats["queries_without_positive_score"] = int(len(np.setdiff1d(all_queries, qid[known])))
        for name, value, limit in (("margin", margin, lambda p, v: p - v),
                                   ("relative_margin", relative_margin, lambda p, v: (1.0 - v) * p)):
            if value is None:
                continue
            too_close = keep & known & (score > limit(reference, value))
            stats[f"dropped_{name}"] = int(too_close.sum())
            keep &= ~too_close

    qid, pid, rank = qid[keep], pid[keep], rank[keep]
    # The draw: a random key per candidate, then the per_query smallest keys of each query. The run was
    # sorted first, so the result depends on the seed and the run's content, not its row order.
    random_key = np.random.default_rng(seed).random(len(qid))
    drawn = np.lexsort((random_key, qid))
    starts = np.searchsorted(qid[drawn], qid[drawn], side="left")
    chosen = np.sort(drawn[np.arange(len(drawn)) - starts < per_query])
    negatives = pd.DataFrame({"qid": qid[chosen], "pid": pid[chosen], "rank": rank[chosen].astype(np.int32)})

    with_candidate = np.unique(qid)
    lacking = np.setdiff1d(all_queries, with_candidate)
    counts = np.bincount(np.searchsorted(with_candidate, qid), minlength=len(with_candidate))
    stats.update({"negatives": int(len(negatives)), "queries_with_negatives": int(len(with_candidate)),
                  "queries_without_candidate": int(len(lacking)),
                  "queries_without_candidate_examples": lacking[:10].tolist(),
                  "queries_with_fewer_than_requested": int((counts < per_query).sum())})
    return negatives, stats


def _lowest_positive_score(positive_scores: pd.DataFrame, qid: np.ndarray) -> np.ndarray:
    """Per row of ``qid``, the lowest recorded positive score of that query (NaN when none was recorded)."""
    lowest = positive_scores.groupby("qid")["score"].min()
    ids = lowest.index.to_numpy(dtype=np.int64)
    values = lowest.to_numpy(dtype=np.float32)
    out = np.full(len(qid), np.nan, dtype=np.float32)
    if len(ids):
        at = np.minimum(np.searchsorted(ids, qid), len(ids) - 1)
        hit = ids[at] == qid
        out[hit] = values[at[hit]]
    return out
