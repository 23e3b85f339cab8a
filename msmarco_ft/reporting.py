"""Evaluation files (metrics.json + per-query Parquet) and the comparison report built from them.

``<label>.metrics.json`` holds the averaged metrics, the query counts, the model and timing, and names
its ``<label>.per_query.parquet`` (one row per evaluated query). The JSON is written last, so its
presence means the evaluation is complete. The report compares models on the same queries: a 95%
bootstrap interval per metric and a paired sign-flip test against the baseline.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .formats import atomic_output
from .stats import CONFIDENCE, N_RESAMPLES, SEED, bootstrap_cis, paired_randomization_tests

log = logging.getLogger(__name__)
# Report metric -> per-query column it averages.
REPORT_METRICS = {"MRR@10": "rr@10", "MRR@100": "rr@100", "Recall@100": "recall@100", "nDCG@10": "ndcg@10"}
PRIMARY = "MRR@10"
METRICS_SUFFIX = ".metrics.json"
PER_QUERY_SUFFIX = ".per_query.parquet"


def evaluation_paths(output_dir, label: str) -> tuple[Path, Path]:
    return Path(output_dir) / f"{label}{METRICS_SUFFIX}", Path(output_dir) / f"{label}{PER_QUERY_SUFFIX}"


def per_query_path_for(metrics_path) -> Path:
    """``x.metrics.json`` -> ``x.per_query.parquet``; any other ``x.json`` -> ``x.per_query.parquet``."""
    path = Path(metrics_path)
    name = path.name
    stem = name[:-len(METRICS_SUFFIX)] if name.endswith(METRICS_SUFFIX) else path.stem
    return path.with_name(stem + PER_QUERY_SUFFIX)


def write_evaluation(metrics_path, metrics: dict, per_query: pd.DataFrame, extra: dict | None = None) -> Path:
    """Write the per-query table, then the metrics JSON that names it (the completion marker)."""
    metrics_path = Path(metrics_path)
    per_query_path = per_query_path_for(metrics_path)
    with atomic_output(per_query_path) as tmp:
        per_query.to_parquet(tmp, index=False)
    scores = {k: v for k, v in metrics.items() if k != "queries"}
    body = {**(extra or {}), "metrics": scores, "queries": metrics.get("queries", {}),
            "per_query": per_query_path.name}
    with atomic_output(metrics_path) as tmp:
        tmp.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return metrics_path


@dataclass
class Evaluation:
    name: str
    path: Path
    metrics: dict
    per_query: pd.DataFrame
    info: dict = field(default_factory=dict)


def _find_metrics_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    found = sorted(path.glob(f"*{METRICS_SUFFIX}"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise InputError(path, f"folder holds {what} *{METRICS_SUFFIX} files; name the file itself")
    return found[0]


def load_evaluation(path, name: str | None = None) -> Evaluation:
    """Read a metrics.json (or a folder holding exactly one) and its per-query table."""
    path = _find_metrics_file(Path(path))
    body = _read_json_object(path)
    if not isinstance(body.get("metrics"), dict) or "per_query" not in body:
        raise InputError(path, "not a metrics.json from eval_model.py or mrr_calculator.py --output "
                               "(needs 'metrics' and 'per_query')")
    per_query_path = path.parent / body["per_query"]
    if not per_query_path.exists():
        raise InputError(per_query_path, f"per-query file named by {path} is missing")
    try:
        per_query = pd.read_parquet(per_query_path)
    except (OSError, ValueError) as exc:
        raise InputError(per_query_path, f"not a readable Parquet file ({exc})") from None
    missing = [c for c in ["qid", *REPORT_METRICS.values()] if c not in per_query]
    if missing:
        raise InputError(per_query_path, f"missing per-query column(s) {', '.join(missing)}")
    default = body.get("label") or path.name.removesuffix(METRICS_SUFFIX).removesuffix(".json")
    info = {k: v for k, v in body.items() if k not in ("metrics", "per_query")}
    return Evaluation(name or default, path, body["metrics"], per_query.sort_values("qid", ignore_index=True), info)


# ---------------------------------------------------------------- latency


def _flatten(data, prefix: str = "") -> dict[str, float]:
    """Numeric leaves as dotted paths; a list of dicts with a batch size is keyed ``batch_<n>``."""
    leaves: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            leaves.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            size = value.get("batch_size") if isinstance(value, dict) else None
            leaves.update(_flatten(value, f"{prefix}{f'batch_{size}' if size is not None else i}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        leaves[prefix.rstrip(".")] = float(data)
    return leaves


# The latency JSON belongs to inference_times.py; these patterns read it defensively, so a renamed
# field drops a column instead of breaking the report.
LATENCY_FIELDS = {
    "encode p50 bs=1 (ms)": re.compile(r"encod\w*\.(?:\w*_)?1\..*p50", re.I),
    "search p50 1 query (ms)": re.compile(r"search\.(?:.*\.)?(?:\w*_)?1\..*p50", re.I),
    "end-to-end p50 (ms)": re.compile(r"(?:end[_\-]?to[_\-]?end|e2e).*(?:p50|_ms$)", re.I),
}


def latency_summary(data: dict) -> dict[str, float]:
    """The latency columns this file provides (absent fields are simply left out)."""
    leaves = _flatten(data)
    # A LoRA latency file times base, unmerged and merged variants: the merged one is what gets deployed.
    leaves = dict(sorted(leaves.items(), key=lambda kv: bool(re.search(r"\b(?:base|unmerged)\b", kv[0]))))
    found = {}
    for column, pattern in LATENCY_FIELDS.items():
        for key, value in leaves.items():
            if pattern.search(key) and not re.search(r"p9\d|mean|std|qps|per_s", key, re.I):
                found[column] = value
                break
    return found


def latency_notes(data: dict) -> list[str]:
    """Plain sentences for what the table cannot show: the encode/search split and LoRA ratios."""
    notes = []
    split = data.get("end_to_end") or {}
    if isinstance(split, dict) and "encode_share" in split:
        notes.append(f"end-to-end per query is {split['encode_share']:.0%} query encoding and "
                     f"{1 - split['encode_share']:.0%} search")
    ratios = data.get("ratios") or {}
    if isinstance(ratios, dict) and "merged" in ratios:
        parts = [f"{variant} adapter {ratios[variant]['encode']:.3f}x" for variant in ("unmerged", "merged")
                 if isinstance(ratios.get(variant), dict) and "encode" in ratios[variant]]
        diff = (data.get("max_abs_diff") or {}).get("merged_vs_unmerged")
        notes.append("query encoding latency relative to the base model: " + ", ".join(parts)
                     + (f"; largest embedding difference merged vs unmerged {diff:.1e}" if diff is not None else ""))
    return notes


def load_latency(path) -> dict:
    return _read_json_object(Path(path))


def _read_json_object(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def _latency_key(data: dict) -> str | None:
    from .models import model_label

    name = data.get("label") or data.get("model") or (data.get("config") or {}).get("model")
    return model_label(str(name)) if name else None


def _names_of(evaluation: Evaluation) -> set[str]:
    from .models import model_label

    names = {evaluation.name, evaluation.info.get("label")}
    if evaluation.info.get("model"):
        names.add(model_label(str(evaluation.info["model"])))  # a merged-adapter eval still names its adapter
    return names


def attach_latency(evaluations: list[Evaluation], latency_files: list) -> dict[str, dict]:
    """Match latency files to models by model label; unmatched files go by position when counts agree."""
    loaded = [(Path(p), load_latency(p)) for p in latency_files]
    by_name: dict[str, dict] = {}
    unmatched = []
    for path, data in loaded:
        key = _latency_key(data)
        target = next((e for e in evaluations if key and key in _names_of(e)), None)
        if target is not None and target.name not in by_name:
            by_name[target.name] = {"file": str(path), "notes": latency_notes(data), **latency_summary(data)}
        else:
            unmatched.append((path, data))
    free = [e for e in evaluations if e.name not in by_name]
    if unmatched and len(unmatched) == len(free):
        for evaluation, (path, data) in zip(free, unmatched):
            by_name[evaluation.name] = {"file": str(path), "notes": latency_notes(data), **latency_summary(data)}
    else:
        for path, _ in unmatched:
            log.warning("%s: could not match this latency file to a model; left out", path)
    return by_name


# ---------------------------------------------------------------- comparison


def _check_same_queries(baseline: Evaluation, other: Evaluation) -> None:
    if len(baseline.per_query) != len(other.per_query) or \
            not np.array_equal(baseline.per_query["qid"].to_numpy(), other.per_query["qid"].to_numpy()):
        raise InputError(other.path, f"evaluated on {len(other.per_query)} queries, the baseline "
                                     f"({baseline.path}) on {len(baseline.per_query)} different ones; "
                                     "evaluate both on the same queries and qrels")


def compare(baseline: Evaluation, others: list[Evaluation], n_resamples: int = N_RESAMPLES,
            confidence: float = CONFIDENCE, seed: int = SEED, alpha: float = 0.05) -> dict:
    """Per model and metric: mean, bootstrap CI, and the paired difference to the baseline with its p-value.

    Every model and metric is resampled in one pass (same resampled queries, same sign flips).
    """
    evaluations = [baseline, *others]
    for evaluation in others:
        _check_same_queries(baseline, evaluation)
    columns = list(REPORT_METRICS.values())
    values = np.hstack([e.per_query[columns].to_numpy(dtype=np.float64) for e in evaluations])
    low, high = bootstrap_cis(values, confidence, n_resamples, seed)
    diffs = values[:, len(columns):] - np.tile(values[:, :len(columns)], len(others))
    p_values = paired_randomization_tests(diffs, n_resamples, seed) if others else np.zeros(0)
    means = values.mean(axis=0) if len(values) else np.full(values.shape[1], np.nan)
    models = []
    for i, evaluation in enumerate(evaluations):
        row = {"name": evaluation.name, "model": evaluation.info.get("model"), "file": str(evaluation.path),
               "queries": len(evaluation.per_query), "metrics": {}, "vs_baseline": {}}
        for j, metric in enumerate(REPORT_METRICS):
            col = i * len(columns) + j
            row["metrics"][metric] = {"value": float(means[col]), "ci_low": float(low[col]),
                                      "ci_high": float(high[col])}
            if i:
                d = (i - 1) * len(columns) + j
                row["vs_baseline"][metric] = {"difference": float(diffs[:, d].mean()),
                                              "p_value": float(p_values[d]), "queries": len(diffs)}
        models.append(row)
    return {"baseline": baseline.name, "models": models, **verdict(models, alpha),
            "settings": {"resamples": n_resamples, "confidence": confidence, "seed": seed, "alpha": alpha,
                         "primary_metric": PRIMARY}}


def verdict(models: list[dict], alpha: float) -> dict:
    """The best model on the primary metric, whether its gain is significant, and who fell below baseline."""
    best = max(models, key=lambda m: m["metrics"][PRIMARY]["value"])
    test = best["vs_baseline"].get(PRIMARY)
    worse = [{"name": m["name"], **m["vs_baseline"][PRIMARY],
              "significant": m["vs_baseline"][PRIMARY]["p_value"] < alpha}
             for m in models[1:] if m["vs_baseline"][PRIMARY]["difference"] < 0]
    return {"winner": {"name": best["name"], "is_baseline": test is None,
                       "significant": bool(test and test["p_value"] < alpha)},
            "worse_than_baseline": worse}


# ---------------------------------------------------------------- rendering


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def _ms(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if value < 1 else f"{value:.2f}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else ("<0.0001" if value < 1e-4 else f"{value:.4f}")


def _p_phrase(value: float) -> str:
    text = _p(value)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def table_rows(result: dict, latency: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    lat_columns = [c for c in LATENCY_FIELDS if any(c in latency.get(m["name"], {}) for m in result["models"])]
    header = ["model", *(f"{m} [95% CI]" for m in REPORT_METRICS), f"Δ {PRIMARY}", "p", *lat_columns]
    rows = []
    for model in result["models"]:
        cells = [model["name"] + (" (baseline)" if model["name"] == result["baseline"] else "")]
        for metric in REPORT_METRICS:
            m = model["metrics"][metric]
            cells.append(f"{_fmt(m['value'])} [{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]")
        test = model["vs_baseline"].get(PRIMARY)
        cells += [f"{test['difference']:+.4f}", _p(test["p_value"])] if test else ["–", "–"]
        cells += [_ms(latency.get(model["name"], {}).get(c)) for c in lat_columns]
        rows.append(cells)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in [header, *rows])


def verdict_lines(result: dict) -> list[str]:
    alpha = result["settings"]["alpha"]
    winner = result["winner"]
    best = next(m for m in result["models"] if m["name"] == winner["name"])
    value = best["metrics"][PRIMARY]["value"]
    if winner["is_baseline"]:
        lines = [f"**No model beat the baseline** on {PRIMARY} ({winner['name']}: {value:.4f})."]
    else:
        test = best["vs_baseline"][PRIMARY]
        real = "a real gain" if winner["significant"] else "not a significant gain"
        lines = [f"**Winner: {winner['name']}** with {PRIMARY} {value:.4f}, {test['difference']:+.4f} over the "
                 f"baseline ({_p_phrase(test['p_value'])}: {real} at α = {alpha})."]
    for worse in result["worse_than_baseline"]:
        how = "significantly" if worse["significant"] else "not significantly"
        lines.append(f"⚠ **{worse['name']} is worse than the baseline** on {PRIMARY}: {worse['difference']:+.4f} "
                     f"({_p_phrase(worse['p_value'])}, {how} at α = {alpha}).")
    return lines


def differences_table(result: dict) -> str:
    header = ["model", *(f"Δ {m} (p)" for m in REPORT_METRICS)]
    rows = [[m["name"], *(f"{m['vs_baseline'][k]['difference']:+.4f} ({_p(m['vs_baseline'][k]['p_value'])})"
                          for k in REPORT_METRICS)] for m in result["models"][1:]]
    return markdown_table(header, rows)


def bar_chart(result: dict, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(REPORT_METRICS)
    models = result["models"]
    width = 0.8 / len(models)
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(metrics) + 0.6 * len(models)), 4.0))
    for i, model in enumerate(models):
        values = np.array([model["metrics"][k]["value"] for k in metrics])
        low = np.array([model["metrics"][k]["ci_low"] for k in metrics])
        high = np.array([model["metrics"][k]["ci_high"] for k in metrics])
        ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=model["name"],
               yerr=np.vstack([values - low, high - values]), capsize=3)
    ax.set_xticks(x, metrics)
    ax.set_ylabel("score (95% bootstrap CI)")
    ax.set_title(f"Retrieval quality on {models[0]['queries']} queries")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def _image_section(title: str, images: list, out_dir: Path) -> list[str]:
    if not images:
        return []
    lines = [f"## {title}", ""]
    for image in images:
        rel = os.path.relpath(Path(image).resolve(), out_dir.resolve())
        lines += [f"![{Path(image).stem}]({rel})", ""]
    return lines


def render_markdown(result: dict, latency: dict[str, dict], chart_name: str, out_dir: Path,
                    loss_curves: list | None = None, pictures: list | None = None) -> str:
    settings = result["settings"]
    header, rows = table_rows(result, latency)
    queries = result["models"][0]["queries"]
    lines = ["# Evaluation report", "", "\n\n".join(verdict_lines(result)), "",
             f"Baseline: **{result['baseline']}**. {queries} queries (each model on the same queries).", "",
             "## Results", "", markdown_table(header, rows), "", f"![metrics]({chart_name})", ""]
    if len(result["models"]) > 1:
        lines += ["## Paired differences to the baseline", "", differences_table(result), ""]
    if latency:
        lines += ["## Latency", "", "Read from these latency JSON files (fields a file does not provide show n/a; "
                  "for a LoRA file, the merged variant):", ""]
        lines += [f"- {name}: `{info['file']}`" + "".join(f"; {note}" for note in info.get("notes", []))
                  for name, info in latency.items()] + [""]
    lines += _image_section("Fine-tuning loss curves", loss_curves or [], out_dir)
    lines += _image_section("Pictures", pictures or [], out_dir)
    lines += ["## Method", "",
              f"- Intervals: {settings['confidence']:.0%} percentile bootstrap of the mean over queries, "
              f"{settings['resamples']} resamples, seed {settings['seed']}.",
              f"- p-values: two-sided paired randomization (sign-flip) test of the mean per-query difference to "
              f"the baseline, {settings['resamples']} resamples, seed {settings['seed']}; not corrected for "
              "multiple comparisons.",
              "- Metrics follow the official MS MARCO rules (see docs/evaluation.md): the denominator is every "
              "query in the qrels; a query without a retrieved relevant passage counts 0.", ""]
    return "\n".join(lines)
