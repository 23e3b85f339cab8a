"""What eval_model.py does: search the dev queries, write the run, TREC file, metrics and per-query table.

Every output name starts with the model's label, so models never overwrite or reuse each other's
results. ``<label>.config.json`` is written last and records a signature of the inputs and settings;
``--resume`` compares it to decide that the outputs are complete and current.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import cli
from .errors import InputError
from .formats import read_table, write_table, write_trec
from .metrics import evaluate_run
from .models import load_model, model_label
from .reporting import evaluation_paths, write_evaluation

log = logging.getLogger(__name__)
# Arguments that change only how fast the outputs come, not what they hold (the search is exact).
SPEED_ONLY_ARGS = ("resume", "overwrite", "verbose", "no_progress", "batch_size", "query_batch_size", "chunk_size",
                   "cache_dir")


@dataclass
class EvalPlan:
    output_dir: Path
    label: str
    run: Path
    trec: Path
    metrics: Path | None
    per_query: Path | None
    config: Path

    @classmethod
    def from_args(cls, args) -> EvalPlan:
        label = args.label or model_label(args.model) + ("-merged" if args.merge else "")
        out = Path(args.output_dir)
        metrics, per_query = evaluation_paths(out, label) if args.qrels else (None, None)
        return cls(out, label, out / f"{label}.run.{args.run_format}", out / f"{label}.trec", metrics, per_query,
                   out / f"{label}.config.json")

    def outputs(self) -> list[Path]:
        return [p for p in (self.run, self.trec, self.metrics, self.per_query, self.config) if p is not None]

    @property
    def state_dir(self) -> Path:
        return self.output_dir / f".{self.label}.state"

    def is_current(self, signature: dict) -> bool:
        return all(p.exists() for p in self.outputs()) and cli.is_current(self.config, signature)


def current_signature(args) -> dict:
    return cli.signature(args, {name: getattr(args, name) for name in ("model", "queries", "collection", "qrels")},
                         ignore=SPEED_ONLY_ARGS)


def _load_queries(args) -> pd.DataFrame:
    queries = read_table(args.queries, "queries")
    if args.max_queries:
        queries = queries.head(args.max_queries)
    return queries[["qid", "text"]].reset_index(drop=True)


def _load_qrels(args, queries: pd.DataFrame) -> pd.DataFrame:
    qrels = read_table(args.qrels, "qrels")
    if args.max_queries:
        # A deliberate subset is scored on its own judgements, not against every query it skipped.
        qrels = qrels[qrels["qid"].isin(queries["qid"])].reset_index(drop=True)
    if not (qrels["rel"].to_numpy() > 0).any():
        raise InputError(args.qrels, "no relevant judgement (rel > 0) for the searched queries")
    return qrels


def run_evaluation(args, plan: EvalPlan) -> str:
    """Search, write every output, and return a short human summary."""
    signature = current_signature(args)
    queries = _load_queries(args)
    qrels = _load_qrels(args, queries) if args.qrels else None
    started = time.perf_counter()
    model = load_model(args.model, args.device, args.precision, merge_adapter=args.merge)
    load_s = time.perf_counter() - started
    from .search import search_collection

    cache_dir = None if str(args.cache_dir).lower() == "none" else args.cache_dir
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    # Outputs being replaced are no longer current: a run interrupted from here on must not look finished.
    plan.config.unlink(missing_ok=True)
    result = search_collection(model, queries, args.collection, top_k=args.top_k, chunk_size=args.chunk_size,
                               batch_size=args.batch_size, query_batch_size=args.query_batch_size,
                               cache_dir=cache_dir, state_dir=plan.state_dir, resume=args.resume,
                               progress=not args.no_progress)
    write_table(result.run, plan.run, "run")
    write_trec(result.run, plan.trec, plan.label)
    timing = {"model_load_seconds": round(load_s, 3),
              **{k: round(v, 3) if isinstance(v, float) else v for k, v in result.stats.items()}}
    lines = [f"{plan.label}: {len(queries)} queries, top-{args.top_k}, run {plan.run}"]
    if qrels is not None:
        metrics, per_query = evaluate_run(qrels, result.run, queries_from=args.queries_from)
        write_evaluation(plan.metrics, metrics, per_query, extra={
            "label": plan.label, "model": args.model, "merged": args.merge, "run": plan.run.name,
            "trec": plan.trec.name, "qrels": str(args.qrels), "queries_file": str(args.queries),
            "queries_from": args.queries_from, "timing": timing})
        counts = metrics["queries"]
        if counts["qrels_only"]:
            log.warning("%d qrels queries were not searched (they count 0; see --queries-from)",
                        counts["qrels_only"])
        lines.append("  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "queries"))
        lines.append(f"queries: qrels {counts['qrels']}, run {counts['run']}, both {counts['both']}")
    cli.write_config(plan.output_dir, args, name=plan.config.name,
                     inputs={"queries": args.queries, "collection": args.collection, "qrels": args.qrels},
                     extra={"signature": signature, "label": plan.label, "timing": timing,
                            "outputs": [p.name for p in plan.outputs()]})
    return "\n".join(lines)
