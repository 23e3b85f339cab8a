"""Pictures of an embedding space: sampled queries with their positives and hard negatives, projected by UMAP.

Each picture comes with numbers: the mean cosine of a query to its positive and to its negatives, and
their gap. A fine-tuned retriever should pull positives closer and push hard negatives away, which
shows as a wider gap and, in the picture, shorter query-positive lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .formats import iter_table

log = logging.getLogger(__name__)

COLOURS = {"query": "#1f77b4", "positive": "#2ca02c", "negative": "#d62728"}
MARKERS = {"query": "o", "positive": "^", "negative": "x"}
STYLE = {"query": {"size": 24, "width": 0.3, "edge": "white"},
         "positive": {"size": 30, "width": 0.5, "edge": "#114411"},
         "negative": {"size": 18, "width": 1.0, "edge": None}}
LEGEND_ORDER = ("query", "positive", "negative", "query \u2192 positive")


@dataclass
class Sample:
    qids: np.ndarray
    queries: list[str]
    positives: list[str]  # one per query, same order
    negatives: list[str]
    owner: np.ndarray  # index into queries of each negative's query
    negative_source: str
    stats: dict = field(default_factory=dict)

    def texts(self) -> list[str]:
        return self.queries + self.positives + self.negatives

    def kinds(self) -> np.ndarray:
        n, m = len(self.queries), len(self.negatives)
        return np.array(["query"] * n + ["positive"] * n + ["negative"] * m)


def sample_points(queries: pd.DataFrame, qrels: pd.DataFrame, collection_path, run: pd.DataFrame | None = None,
                  num_queries: int = 100, negatives_per_query: int = 2, rank_min: int = 50, rank_max: int = 200,
                  seed: int = 42) -> Sample:
    """N seeded queries that have a judged positive, the lowest-pid positive each, and their negatives.

    Negatives come from the run's ranks ``rank_min..rank_max`` (hard negatives, judged positives
    excluded) when a run is given, otherwise uniformly from the collection.
    """
    rng = np.random.default_rng(seed)
    relevant = qrels[qrels["rel"] > 0]
    known = np.intersect1d(queries["qid"].to_numpy(), relevant["qid"].to_numpy())
    if known.size == 0:
        raise InputError(None, "no query in the queries file has a relevant passage in the qrels")
    qids = np.sort(rng.choice(known, size=min(num_queries, known.size), replace=False))
    positive = relevant[relevant["qid"].isin(qids)].groupby("qid")["pid"].min()
    judged = set(zip(relevant["qid"].to_numpy().tolist(), relevant["pid"].to_numpy().tolist()))

    if run is not None:
        window = run[run["qid"].isin(qids) & run["rank"].between(rank_min, rank_max)]
        window = window[[(q, p) not in judged for q, p in zip(window["qid"].tolist(), window["pid"].tolist())]]
        # A seeded random key per row, then the first few per query: a seeded sample without a loop per query.
        window = window.assign(key=rng.random(len(window))).sort_values(["qid", "key"])
        picked = window.groupby("qid").head(negatives_per_query)
        neg_qids, neg_pids = picked["qid"].to_numpy(), picked["pid"].to_numpy()
        source = f"run ranks {rank_min}-{rank_max}"
        if len(picked) == 0:
            raise InputError(None, f"the run has no unjudged passage at ranks {rank_min}-{rank_max} for the "
                                   "sampled queries")
    else:
        all_pids = np.concatenate([f["pid"].to_numpy() for f in iter_table(collection_path, "collection")])
        neg_qids = np.repeat(qids, negatives_per_query)
        neg_pids = rng.choice(all_pids, size=neg_qids.size, replace=True)
        keep = np.array([(q, p) not in judged for q, p in zip(neg_qids.tolist(), neg_pids.tolist())], dtype=bool)
        neg_qids, neg_pids = neg_qids[keep], neg_pids[keep]
        source = "random collection passages"

    texts = _passage_texts(collection_path, set(positive.to_numpy().tolist()) | set(neg_pids.tolist()))
    missing = [p for p in positive.to_numpy().tolist() + neg_pids.tolist() if p not in texts]
    if missing:
        raise InputError(collection_path, f"pid {missing[0]} (named by the qrels or run) is not in the collection")
    query_text = dict(zip(queries["qid"].to_numpy().tolist(), queries["text"].tolist()))
    position = {q: i for i, q in enumerate(qids.tolist())}
    return Sample(
        qids=qids,
        queries=[query_text[q] for q in qids.tolist()],
        positives=[texts[positive[q]] for q in qids.tolist()],
        negatives=[texts[p] for p in neg_pids.tolist()],
        owner=np.array([position[q] for q in neg_qids.tolist()], dtype=np.int64),
        negative_source=source,
        stats={"queries": int(len(qids)), "negatives": int(len(neg_pids)), "queries_with_positive": int(known.size)},
    )


def _passage_texts(collection_path, wanted: set[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for frame in iter_table(collection_path, "collection"):
        hit = frame[frame["pid"].isin(wanted)]
        found.update(zip(hit["pid"].tolist(), hit["text"].tolist()))
        if len(found) == len(wanted):
            break
    return found


def normalise(emb: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def cosine_stats(emb: np.ndarray, sample: Sample) -> dict:
    """Mean cosine query-positive and query-negative (each negative against its own query), and the gap."""
    emb = normalise(emb)
    n = len(sample.queries)
    q, p, neg = emb[:n], emb[n:2 * n], emb[2 * n:]
    pos_cos = np.sum(q * p, axis=1)
    neg_cos = np.sum(q[sample.owner] * neg, axis=1)
    # Share of queries whose positive is closer than every one of its sampled negatives.
    worst = np.full(n, -np.inf)
    np.maximum.at(worst, sample.owner, neg_cos)
    return {"mean_cos_query_positive": float(pos_cos.mean()), "mean_cos_query_negative": float(neg_cos.mean()),
            "gap": float(pos_cos.mean() - neg_cos.mean()),
            "positive_beats_negatives": float(np.mean(pos_cos > worst))}


def project(embeddings: list[np.ndarray], fit: str = "shared", n_neighbors: int = 15, n_epochs: int = 200,
            min_dist: float = 0.1, seed: int = 42) -> list[np.ndarray]:
    """2-D UMAP coordinates per model: one fit over all models' points (comparable maps) or one fit each."""
    import umap

    def fit_transform(points: np.ndarray) -> np.ndarray:
        reducer = umap.UMAP(n_neighbors=max(2, min(n_neighbors, len(points) - 1)), n_epochs=n_epochs,
                            min_dist=min_dist, metric="cosine", random_state=seed, init="random", n_jobs=1)
        return reducer.fit_transform(points)

    if fit == "per-model":
        return [fit_transform(emb) for emb in embeddings]
    dims = {emb.shape[1] for emb in embeddings}
    if len(dims) > 1:
        raise InputError(None, f"--fit shared needs models with one embedding size, got {sorted(dims)}; "
                               "use --fit per-model")
    coords = fit_transform(np.concatenate(embeddings))
    bounds = np.cumsum([0] + [len(emb) for emb in embeddings])
    return [coords[start:stop] for start, stop in zip(bounds, bounds[1:])]


def draw(ax, coords: np.ndarray, sample: Sample, title: str) -> None:
    n = len(sample.queries)
    kinds = sample.kinds()
    segments = np.stack([coords[:n], coords[n:2 * n]], axis=1)
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segments, colors="#7f7f7f", linewidths=0.6, alpha=0.6, zorder=1,
                                     label="query \u2192 positive"))
    # Positives drawn last: for a good model they sit on top of their query and would otherwise be hidden.
    for kind in ("negative", "query", "positive"):
        points = coords[kinds == kind]
        ax.scatter(points[:, 0], points[:, 1], s=STYLE[kind]["size"], c=COLOURS[kind], marker=MARKERS[kind],
                   alpha=0.85, linewidths=STYLE[kind]["width"], edgecolors=STYLE[kind]["edge"], label=kind,
                   zorder=2)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.autoscale_view()


def _legend(ax) -> tuple[list, list[str]]:
    by_label = dict(zip(*reversed(ax.get_legend_handles_labels())))
    labels = [label for label in LEGEND_ORDER if label in by_label]
    return [by_label[label] for label in labels], labels


def _title(name: str, stats: dict) -> str:
    return (f"{name}\ncos(q,pos) {stats['mean_cos_query_positive']:.3f}   cos(q,neg) "
            f"{stats['mean_cos_query_negative']:.3f}   gap {stats['gap']:+.3f}")


def save_model_png(path: Path, coords: np.ndarray, sample: Sample, name: str, stats: dict, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .formats import atomic_output

    fig, ax = plt.subplots(figsize=(6.5, 6))
    draw(ax, coords, sample, _title(name, stats))
    ax.legend(*_legend(ax), loc="best", fontsize=8, framealpha=0.85)
    fig.text(0.5, 0.01, caption, ha="center", fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def save_comparison_png(path: Path, coords: list[np.ndarray], sample: Sample, names: list[str],
                        stats: list[dict], caption: str, shared: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .formats import atomic_output

    fig, axes = plt.subplots(1, len(coords), figsize=(5.2 * len(coords), 5.6), squeeze=False,
                             sharex=shared, sharey=shared)
    for ax, xy, name, stat in zip(axes[0], coords, names, stats):
        draw(ax, xy, sample, _title(name, stat))
    fig.legend(*_legend(axes[0][0]), loc="lower center", ncol=4, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.04))
    fig.text(0.5, 0.01, caption, ha="center", fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
