"""(query, positive, negative) triplets from queries, qrels and negatives, reading the collection once.

Only the passages the triplets name are kept while the collection streams by, so memory follows the
number of triplets, not the collection's size (MS MARCO's 8.8M passages are ~3 GB of text).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .errors import InputError
from .formats import file_format, iter_table
from .negatives import judged_positives, pair_keys

log = logging.getLogger(__name__)


def count_rows(collection_path) -> int:
    """Passages in a collection without parsing it: Parquet metadata, or the TSV's line count.

    Hand-written because a uniform draw of row numbers needs the count before the one parsing pass.
    """
    path = Path(collection_path)
    if file_format(path) == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def random_negative_rows(qids: np.ndarray, per_query: int, n_rows: int, seed: int) -> np.ndarray:
    """Two candidate row numbers per negative slot, uniform over the collection: [len(qids) * per_query, 2].

    The second stands in when the first turns out to be one of the query's positives.
    """
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_rows, size=(len(qids) * per_query, 2), dtype=np.int64)


def build_triplets(queries: pd.DataFrame, qrels: pd.DataFrame, collection_path, *,
                   negatives: pd.DataFrame | None = None, positives: str = "all", random_negatives: bool = False,
                   negatives_per_query: int = 1, seed: int = 42, chunk_rows: int = 200_000
                   ) -> tuple[pd.DataFrame, dict]:
    """Join each query's judged positives (all, or the first in qrels order) with its negatives.

    Negatives come from ``negatives`` (qid, pid, rank) or, with ``random_negatives``, are drawn uniformly
    from the collection (seeded; never one of the query's positives). Triplets are ordered by query
    (as in ``queries``), then positive (qrels order), then negative (rank, or draw order).
    """
    if positives not in ("all", "first"):
        raise ValueError("positives must be 'all' or 'first'")
    query_order = pd.Series(np.arange(len(queries)), index=queries["qid"].to_numpy())
    pos = judged_positives(qrels)
    pos = pos[pos["qid"].isin(query_order.index)]
    if positives == "first":
        pos = pos.drop_duplicates("qid", keep="first")
    pos = pos.assign(pos_order=np.arange(len(pos)))
    stats = {"queries": int(len(queries)), "queries_with_positive": int(pos["qid"].nunique()),
             "positives_used": int(len(pos))}

    wanted_rows = None
    if random_negatives:
        with_positive = pos["qid"].drop_duplicates().to_numpy()
        n_rows = count_rows(collection_path)
        wanted_rows = random_negative_rows(with_positive, negatives_per_query, n_rows, seed)
        slot_qids = np.repeat(with_positive, negatives_per_query)
        needed = pos["pid"].to_numpy()
    else:
        if negatives is None:
            raise ValueError("give negatives or random_negatives=True")
        neg = pd.DataFrame({c: negatives[c].to_numpy() for c in ("qid", "pid", "rank")})
        neg = neg[neg["qid"].isin(pos["qid"])].sort_values(["qid", "rank"], kind="stable")
        needed = np.concatenate([pos["pid"].to_numpy(), neg["pid"].to_numpy()])

    texts, row_pids = _collect_passages(collection_path, np.unique(needed), wanted_rows, chunk_rows)

    if random_negatives:
        candidates = row_pids[wanted_rows]
        slot_keys, positive_keys = pair_keys([np.repeat(slot_qids, 2), pos["qid"].to_numpy()],
                                             [candidates.ravel(), pos["pid"].to_numpy()])
        clash = np.isin(slot_keys, positive_keys).reshape(-1, 2)
        pick = np.where(clash[:, 0], 1, 0)
        usable = ~clash[np.arange(len(clash)), pick]
        stats["dropped_random_negative_is_positive"] = int((~usable).sum())
        neg = pd.DataFrame({"qid": slot_qids[usable], "pid": candidates[np.arange(len(clash)), pick][usable],
                            "rank": np.tile(np.arange(1, negatives_per_query + 1), len(with_positive))[usable]})
    else:
        neg_keys, positive_keys = pair_keys([neg["qid"].to_numpy(), pos["qid"].to_numpy()],
                                            [neg["pid"].to_numpy(), pos["pid"].to_numpy()])
        clash = np.isin(neg_keys, positive_keys)
        stats["dropped_negative_is_positive"] = int(clash.sum())
        neg = neg[~clash]

    joined = pos.merge(neg[["qid", "pid", "rank"]].rename(columns={"pid": "neg"}), on="qid")
    joined["query_order"] = query_order.loc[joined["qid"].to_numpy()].to_numpy()
    joined = joined.sort_values(["query_order", "pos_order", "rank"], kind="stable")
    query_text = pd.Series(queries["text"].to_numpy(), index=queries["qid"].to_numpy())
    positive_text = texts.reindex(joined["pid"].to_numpy()).to_numpy()
    negative_text = texts.reindex(joined["neg"].to_numpy()).to_numpy()
    present = pd.notna(positive_text) & pd.notna(negative_text)
    stats["dropped_missing_passage"] = int((~present).sum())
    if len(joined) and not present.any():
        raise InputError(collection_path, "holds none of the passages the qrels and negatives name "
                                          "(are they from another collection?)")
    triplets = pd.DataFrame({"query": query_text.loc[joined["qid"].to_numpy()[present]].to_numpy(),
                             "positive": positive_text[present], "negative": negative_text[present]})
    stats.update({"queries_with_negatives": int(neg["qid"].nunique()), "triplets": int(len(triplets)),
                  "queries_in_triplets": int(joined["qid"][present].nunique())})
    return triplets, stats


def _collect_passages(collection_path, pids: np.ndarray, rows: np.ndarray | None, chunk_rows: int
                      ) -> tuple[pd.Series, np.ndarray]:
    """One pass: texts of ``pids`` and of the passages at row numbers ``rows``; plus row number -> pid."""
    wanted_rows = np.unique(rows) if rows is not None else np.zeros(0, dtype=np.int64)
    row_pids = np.full(int(wanted_rows.max()) + 1 if len(wanted_rows) else 0, -1, dtype=np.int64)
    kept_pids: list[np.ndarray] = []
    kept_texts: list[np.ndarray] = []
    offset = 0
    for frame in iter_table(collection_path, "collection", chunk_rows=chunk_rows):
        frame_pids = frame["pid"].to_numpy()
        local = wanted_rows[(wanted_rows >= offset) & (wanted_rows < offset + len(frame))] - offset
        row_pids[local + offset] = frame_pids[local]
        mask = np.isin(frame_pids, pids)
        mask[local] = True
        kept_pids.append(frame_pids[mask])
        kept_texts.append(frame["text"].to_numpy()[mask])
        offset += len(frame)
    return pd.Series(np.concatenate(kept_texts), index=np.concatenate(kept_pids)), row_pids
