"""What the Modal app needs from the package: the stage table, argv on the volume, collection shards and their merge.

Every stage runs its own script as a subprocess (``python script.py argv``) inside the volume root, so a
stage on a cloud GPU is the same program a user runs by hand; this module only decides the paths. User
arguments come after the defaults, so a user flag overrides a default of the same name (argparse keeps
the last value). Relative paths in user arguments are relative to the volume root.

Volume layout (``ROOT`` is ``/vol`` in a container, ``$MSMARCO_FT_VOLUME_ROOT`` when set)::

    ROOT/data/DATASET/      collection.tsv, queries.*.tsv, qrels.*.tsv (prepare_data or an upload)
    ROOT/cache/             embedding cache shared by every stage
    ROOT/runs/DATASET/      mined run, hard negatives, triplets
    ROOT/shards/DATASET/    collection slices and their runs when mining is sharded
    ROOT/models/DATASET/    fine-tuned models (full/, lora/)
    ROOT/eval/DATASET/      one folder per evaluated model
    ROOT/latency/DATASET/   one JSON per timed model
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import cli, search
from .errors import InputError
from .formats import atomic_output, file_format, read_table, write_table, write_trec
from .models import DEFAULT_MODEL, model_label
from .negatives import positive_scores_path

log = logging.getLogger(__name__)

VOLUME_NAME = "msmarco-ft"
MOUNT = "/vol"
ROOT_ENV = "MSMARCO_FT_VOLUME_ROOT"
SCRIPT_DIR = Path(__file__).resolve().parent.parent
# The mining script's own defaults; shards must cut the collection where its chunks start.
DEFAULT_TOP_K = 200
DEFAULT_CHUNK_SIZE = 200_000


class StageFailed(RuntimeError):
    """A stage's script exited non-zero; its message carries the command to re-run by hand."""


def volume_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, MOUNT))


def flag_value(args: list[str], *names: str) -> str | None:
    """The last value given to any of ``names`` (``--flag value`` or ``--flag=value``), as argparse would keep."""
    found = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


@dataclass(frozen=True)
class Layout:
    root: Path
    dataset: str

    def under(self, path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.root / path

    @property
    def data(self) -> Path:
        return self.root / "data" / self.dataset

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def runs(self) -> Path:
        return self.root / "runs" / self.dataset

    @property
    def shards(self) -> Path:
        return self.root / "shards" / self.dataset

    @property
    def models(self) -> Path:
        return self.root / "models" / self.dataset

    @property
    def evals(self) -> Path:
        return self.root / "eval" / self.dataset

    @property
    def latency(self) -> Path:
        return self.root / "latency" / self.dataset

    @property
    def collection(self) -> Path:
        return self.data / "collection.tsv"

    def _prefer(self, *names: str) -> Path:
        # The real MS MARCO folder also holds the original scripts' filtered/sorted files; use them when there.
        for name in names[:-1]:
            if (self.data / name).exists():
                return self.data / name
        return self.data / names[-1]

    @property
    def train_queries(self) -> Path:
        return self._prefer("filtered_queries.train.tsv", "queries.train.tsv")

    @property
    def train_qrels(self) -> Path:
        return self._prefer("sorted_qrels.train.tsv", "qrels.train.tsv")

    @property
    def dev_queries(self) -> Path:
        return self.data / "queries.dev.small.tsv"

    @property
    def dev_qrels(self) -> Path:
        return self.data / "qrels.dev.small.tsv"

    @property
    def mined_run(self) -> Path:
        return self.runs / f"base_train_top{DEFAULT_TOP_K}.parquet"

    @property
    def negatives(self) -> Path:
        return self.runs / "negatives.tsv"

    @property
    def triplets(self) -> Path:
        return self.runs / "triplets.parquet"


def _model(extra: list[str]) -> str:
    return flag_value(extra, "--model") or DEFAULT_MODEL


def _path(lay: Layout, extra: list[str], flag: str, default: Path) -> Path:
    return lay.under(flag_value(extra, flag) or default)


def _prepare_args(lay: Layout, extra: list[str]) -> list[str]:
    if lay.dataset == "msmarco":
        return ["--msmarco", str(lay.data)]  # resumes an interrupted download
    if lay.collection.exists() and not (lay.data / "config.json").exists():
        return ["--from-dir", str(lay.data)]  # an uploaded folder: only add the filtered/sorted files
    return ["--sample", str(lay.data)]


def _mine_args(lay: Layout, extra: list[str]) -> list[str]:
    return ["--model", DEFAULT_MODEL, "--filtered-queries", str(lay.train_queries), "--collection",
            str(lay.collection), "--qrels", str(lay.train_qrels), "--output", str(lay.mined_run),
            "--cache-dir", str(lay.cache)]


def _negatives_args(lay: Layout, extra: list[str]) -> list[str]:
    return ["--run", str(lay.mined_run), "--qrels", str(lay.train_qrels), "--output", str(lay.negatives)]


def _triplets_args(lay: Layout, extra: list[str]) -> list[str]:
    return ["--filtered-queries", str(lay.train_queries), "--qrels", str(lay.train_qrels),
            "--random-samples", str(lay.negatives), "--collection", str(lay.collection),
            "--output-dir", str(lay.triplets.parent), "--output-file", lay.triplets.name]


def _triplets_file(lay: Layout, extra: list[str]) -> Path:
    folder = _path(lay, extra, "--output-dir", lay.triplets.parent)
    return folder / (flag_value(extra, "--output-file") or lay.triplets.name)


def _finetune_default_dir(lay: Layout, extra: list[str]) -> Path:
    return lay.models / ("lora" if "--lora" in extra else "full")


def _finetune_args(lay: Layout, extra: list[str]) -> list[str]:
    return ["--model", DEFAULT_MODEL, "--train-file", str(lay.triplets),
            "--output-dir", str(_finetune_default_dir(lay, extra))]


def _finetune_result(lay: Layout, extra: list[str]) -> Path:
    # finetune.py writes result.json last (model/ for the model or adapter, merged/ with --merge).
    return _path(lay, extra, "--output-dir", _finetune_default_dir(lay, extra)) / "result.json"


def _eval_args(lay: Layout, extra: list[str]) -> list[str]:
    return ["--model", DEFAULT_MODEL, "--filtered-queries", str(lay.dev_queries), "--qrels", str(lay.dev_qrels),
            "--collection", str(lay.collection), "--output-dir", str(lay.evals), "--cache-dir", str(lay.cache)]


def _eval_metrics(lay: Layout, extra: list[str]) -> Path:
    # eval_model.py's own naming: --label, else the model's label (+ "-merged" with --merge).
    label = flag_value(extra, "--label") or model_label(_model(extra)) + ("-merged" if "--merge" in extra else "")
    return _path(lay, extra, "--output-dir", lay.evals) / f"{label}.metrics.json"


def _latency_default(lay: Layout, extra: list[str]) -> Path:
    return lay.latency / f"{model_label(_model(extra))}.json"


def _latency_args(lay: Layout, extra: list[str]) -> list[str]:
    return ["--model", DEFAULT_MODEL, "--filtered-queries", str(lay.dev_queries), "--collection",
            str(lay.collection), "--cache-dir", str(lay.cache), "--output", str(_latency_default(lay, extra))]


@dataclass(frozen=True)
class Stage:
    name: str
    script: str
    gpu: bool
    defaults: Callable[[Layout, list[str]], list[str]]
    output: Callable[[Layout, list[str]], Path]  # exists only once the stage has finished (outputs are atomic)
    resumable: bool  # the script takes --resume (continue, or no-op when its outputs are current)
    summary: str


# The one table mapping a stage to its script and its default paths on the volume.
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("prepare_data", "prepare_data.py", False, _prepare_args,
          lambda lay, extra: lay.data / "config.json", False,  # prepare_data.py writes it last
          "generate the sample (any dataset name), download MS MARCO (dataset 'msmarco'), or add the "
          "filtered/sorted files to an uploaded folder"),
    Stage("mine", "process_train_queries.py", True, _mine_args,
          lambda lay, extra: _path(lay, extra, "--output", lay.mined_run), True,
          "base-model top-200 of the train queries over the collection (--shards N: in N containers)"),
    Stage("sample_negatives", "random_sample.py", False, _negatives_args,
          lambda lay, extra: _path(lay, extra, "--output", lay.negatives), True,
          "hard negatives from ranks 50-200 of the mined run"),
    Stage("build_triplets", "train_data_creator.py", False, _triplets_args, _triplets_file, True,
          "query/positive/negative triplets"),
    Stage("finetune", "finetune.py", True, _finetune_args, _finetune_result, True,
          "full or LoRA (--lora) fine-tuning"),
    Stage("evaluate", "eval_model.py", True, _eval_args, _eval_metrics, True,
          "dev run, TREC file and metrics of one model"),
    Stage("latency", "inference_times.py", True, _latency_args,
          lambda lay, extra: _path(lay, extra, "--output", _latency_default(lay, extra)), False,
          "latency JSON of one model"),
)}
SCRIPTS = tuple(stage.script for stage in STAGES.values())


def stage_argv(name: str, lay: Layout, extra: list[str], resume: bool = False, device: str | None = None
               ) -> list[str]:
    """Defaults, then ``--device`` (GPU stages in a GPU container), then the user's arguments, then ``--resume``."""
    stage = STAGES[name]
    if resume and not stage.resumable:
        raise InputError(None, f"stage {name} has no --resume: it is short, re-run it with --overwrite")
    pinned = ["--device", device] if device and stage.gpu else []
    return stage.defaults(lay, extra) + pinned + list(extra) + (["--resume"] if resume and "--resume" not in extra
                                                                else [])


def pipeline_steps(lay: Layout, stage_args: dict[str, list[str]] | None = None, model: str = DEFAULT_MODEL
                   ) -> list[tuple[str, list[str]]]:
    """The whole flow with the toolkit's default recipe (hard negatives): base evaluation, mining, negatives,
    triplets, full and LoRA fine-tuning (LoRA merged), evaluation and latency of all three models."""
    stage_args = stage_args or {}
    full, lora = lay.models / "full", lay.models / "lora"
    models = {"base": model, "full": str(full / "model"), "lora": str(lora / "merged")}
    steps = [("prepare_data", []), ("evaluate", ["--model", model, "--label", "base"]), ("mine", ["--model", model]),
             ("sample_negatives", []), ("build_triplets", []),
             ("finetune", ["--model", model, "--output-dir", str(full)]),
             ("finetune", ["--model", model, "--lora", "--merge", "--output-dir", str(lora)])]
    steps += [("evaluate", ["--model", models[name], "--label", name]) for name in ("full", "lora")]
    steps += [("latency", ["--model", path, "--output", str(lay.latency / f"{name}.json")])
              for name, path in models.items()]
    return [(name, extra + stage_args.get(name, [])) for name, extra in steps]


def parse_stage_args(text: str) -> dict[str, list[str]]:
    """``"mine: --max-queries 10000; finetune: --epochs 1"`` -> per-stage argument lists (for the pipeline)."""
    found: dict[str, list[str]] = {}
    for part in filter(str.strip, text.split(";")):
        name, sep, args = part.partition(":")
        name = name.strip()
        if not sep or name not in STAGES:
            raise InputError(None, f"pipeline --args part {part.strip()!r}: expected 'STAGE: ARGS' with STAGE one "
                                   f"of {', '.join(STAGES)}")
        found.setdefault(name, []).extend(shlex.split(args))
    return found


def run_script(script: str, argv: list[str], cwd: Path) -> float:
    """Run one script exactly as a user would; its output streams to this process's (the container's) log."""
    path = SCRIPT_DIR / script
    if not path.exists():
        raise StageFailed(f"{path} is missing from this checkout")
    command = [sys.executable, str(path), *argv]
    log.info("running: %s", shlex.join(command))
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    code = subprocess.run(command, cwd=cwd).returncode
    if code != 0:
        raise StageFailed(f"{script} exited with status {code}; command: {shlex.join(command)}")
    return time.perf_counter() - started


def run_stage(name: str, dataset: str, extra: list[str], resume: bool = False, device: str | None = None,
              root: Path | None = None) -> dict:
    if name not in STAGES:
        raise InputError(None, f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    lay = Layout(root or volume_root(), dataset)
    argv = stage_argv(name, lay, extra, resume, device)
    seconds = run_script(STAGES[name].script, argv, lay.root)
    return {"stage": name, "argv": argv, "seconds": round(seconds, 1),
            "output": str(STAGES[name].output(lay, extra))}


# ---------------------------------------------------------------- sharded mining


def count_rows(path: Path) -> int:
    if file_format(path) == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def shard_ranges(rows: int, shards: int, chunk_size: int) -> list[tuple[int, int]]:
    """Contiguous row ranges cut at the mining chunks' boundaries, so every shard encodes and scores exactly
    the chunks an unsharded run would, and the merged top-k is bit-for-bit the unsharded one."""
    chunks = -(-rows // chunk_size)
    cuts = [round(i * chunks / shards) * chunk_size for i in range(shards + 1)]
    return [(start, min(stop, rows)) for start, stop in zip(cuts, cuts[1:]) if start < min(stop, rows)]


def write_slice(source: Path, target: Path, start: int, stop: int) -> Path:
    """Rows [start, stop) of a collection, byte for byte (TSV) or value for value (Parquet): no re-encoding of
    text, which could change an embedding."""
    with atomic_output(target) as tmp:
        if file_format(source) == "parquet":
            parquet, offset, batches = pq.ParquetFile(source), 0, []
            for batch in parquet.iter_batches(batch_size=65_536):
                low, high = max(start - offset, 0), min(stop - offset, batch.num_rows)
                if low < high:
                    batches.append(batch.slice(low, high - low))
                offset += batch.num_rows
                if offset >= stop:
                    break
            # One row group, so the mining script reads the slice in the same chunks as the whole file.
            table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
            pq.write_table(table, tmp, row_group_size=max(stop - start, 1))
        else:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                row = 0
                for line in src:
                    if not line.strip():
                        continue
                    if row >= stop:
                        break
                    if row >= start:
                        out.write(line)
                    row += 1
    return target


def shard_paths(lay: Layout, collection: Path, rows: tuple[int, int]) -> tuple[Path, Path]:
    """Slice and run of one shard, named by its rows: a re-run with another shard count reuses equal slices."""
    folder = lay.shards / f"rows-{rows[0]}-{rows[1]}"
    return folder / f"collection{collection.suffix or '.tsv'}", folder / "run.parquet"


def _shard_plan(lay: Layout, extra: list[str], count: int) -> tuple[Path, list[tuple[int, int]]]:
    collection = _path(lay, extra, "--collection", lay.collection)
    if not collection.exists():
        raise InputError(collection, "no such file (run the prepare_data stage or upload the data first)")
    if count < 1:
        raise InputError(None, f"--shards must be at least 1, got {count}")
    chunk = int(flag_value(extra, "--chunk-size") or DEFAULT_CHUNK_SIZE)
    return collection, shard_ranges(count_rows(collection), count, chunk)


def mine_shard(dataset: str, extra: list[str], index: int, count: int, device: str | None = None,
               root: Path | None = None) -> dict | None:
    """Mine shard ``index`` of ``count`` with the mining script; None when the collection has fewer chunks.

    Always ``--resume``: the script continues an interrupted shard and does nothing for a finished one.
    """
    lay = Layout(root or volume_root(), dataset)
    collection, ranges = _shard_plan(lay, extra, count)
    if index >= len(ranges):
        return None
    piece, run = shard_paths(lay, collection, ranges[index])
    if not piece.exists():
        write_slice(collection, piece, *ranges[index])
    argv = stage_argv("mine", lay, extra, True, device) + ["--collection", str(piece), "--output", str(run)]
    seconds = run_script(STAGES["mine"].script, argv, lay.root)
    return {"shard": index, "rows": list(ranges[index]), "output": str(run), "seconds": round(seconds, 1)}


def merge_runs(runs: Iterable[pd.DataFrame], k: int) -> pd.DataFrame:
    """The exact top-k of the union of per-shard top-k runs over the same queries, by the search code's own
    running merge, so ties fall exactly as in an unsharded search (higher score, then lower pid). Runs are
    folded in one at a time: memory holds one shard's run plus the merged top-k."""
    qids, merged = None, None
    for run in runs:
        run = run[run["rank"] <= k]
        run_qids = run["qid"].to_numpy(dtype=np.int64)
        if qids is None:
            qids = np.unique(run_qids)
        elif not np.array_equal(np.unique(run_qids), qids):
            raise InputError(None, "shard runs cover different queries; were they mined with the same arguments?")
        scores = np.full((len(qids), k), -np.inf, dtype=np.float32)
        pids = np.full((len(qids), k), search.PAD_PID, dtype=np.int64)
        rows, cols = np.searchsorted(qids, run_qids), run["rank"].to_numpy() - 1
        scores[rows, cols] = run["score"].to_numpy(dtype=np.float32)
        pids[rows, cols] = run["pid"].to_numpy(dtype=np.int64)
        if merged is None:
            merged = search.RunningTopK.from_arrays(scores, pids)
        else:
            merged.merge(scores, pids)
    return search.run_frame(qids, *merged.arrays())


def _read(path: Path, kind: str) -> pd.DataFrame:
    frame = read_table(path, kind)
    frame.attrs.clear()  # per-file line numbers: meaningless after a merge, and pd.concat compares attrs
    return frame


def merge_shards(dataset: str, extra: list[str], count: int, root: Path | None = None) -> dict:
    """Merge the shard runs (and positive-score sidecars) into what an unsharded ``mine`` writes, at its paths."""
    lay = Layout(root or volume_root(), dataset)
    collection, ranges = _shard_plan(lay, extra, count)
    runs = [shard_paths(lay, collection, rows)[1] for rows in ranges]
    missing = [str(p) for p in runs if not p.exists()]
    if missing:
        raise StageFailed(f"shard runs missing (mine the shards first): {', '.join(missing)}")
    output = STAGES["mine"].output(lay, extra)
    with_qrels = all(positive_scores_path(p).exists() for p in runs)
    outputs = [output] + ([positive_scores_path(output)] if with_qrels else [])
    cli.refuse_overwrite(outputs, overwrite="--overwrite" in extra)
    k = int(flag_value(extra, "--final-k", "--top-k") or DEFAULT_TOP_K)
    merged = merge_runs((_read(p, "run") for p in runs), k)
    if output.suffix.lower() == ".trec":
        write_trec(merged, output, model_label(_model(extra)))
    else:
        write_table(merged, output, "run")
    if with_qrels:
        # Each judged positive lies in exactly one shard, so its score is in exactly one sidecar.
        scores = pd.concat([_read(positive_scores_path(p), "positive_scores") for p in runs], ignore_index=True)
        write_table(scores.sort_values(["qid", "pid"], ignore_index=True), outputs[1], "positive_scores")
    shards = [{"rows": list(rows), "run": str(p)} for rows, p in zip(ranges, runs)]
    cli.write_config(output.parent, {"stage": "mine", "dataset": dataset, "args": extra, "shards_asked": count},
                     inputs={"collection": collection}, name=output.name + ".config.json",
                     extra={"shards": shards, "outputs": [p.name for p in outputs]})
    return {"stage": "mine", "shards": len(runs), "output": str(output), "rows": len(merged)}
