"""The file contracts between the scripts: one place owns columns, dtypes, encodings and validation.

Every kind is readable from TSV (MS MARCO layout) or Parquet, chosen by the file extension; runs are
also readable from TREC run files (``.trec``). TSV parsing is hand-written rather than pandas/pyarrow
csv because every error must name the exact line, and MS MARCO text holds stray quote characters that
csv dialects misread. Large files stream in chunks, so memory does not grow with the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError

INT, TEXT, FLOAT = "int", "text", "float"


@dataclass(frozen=True)
class Kind:
    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    tsv_header: tuple[str, ...] | None = None  # written and expected as the first TSV line
    unique: str | None = None  # id column that must not repeat
    loose_tsv: bool = False  # fields may be separated by any run of whitespace (TREC qrels)
    tsv_columns: tuple[str, ...] | None = None  # TSV layout when it differs from the Parquet columns

    @property
    def layout(self) -> tuple[str, ...]:
        return self.tsv_columns or self.columns


KINDS = {
    k.name: k
    for k in (
        Kind("collection", ("pid", "text"), (INT, TEXT), unique="pid"),
        Kind("queries", ("qid", "text"), (INT, TEXT), unique="qid"),
        Kind("qrels", ("qid", "pid", "rel"), (INT, INT, INT), loose_tsv=True,
             tsv_columns=("qid", "iter", "pid", "rel")),
        Kind("run", ("qid", "pid", "rank", "score"), (INT, INT, INT, FLOAT),
             tsv_header=("query_id", "passage_id", "rank", "score")),
        Kind("negatives", ("qid", "pid", "rank"), (INT, INT, INT), tsv_header=("query_id", "passage_id", "rank")),
        Kind("triplets", ("query", "positive", "negative"), (TEXT, TEXT, TEXT)),
        # Scores of judged positives, recorded during mining for the false-negative margin filter.
        Kind("positive_scores", ("qid", "pid", "score"), (INT, INT, FLOAT),
             tsv_header=("query_id", "passage_id", "score")),
    )
}
# Narrow dtypes where the contract says so; every id is int64.
DTYPES = {"rank": np.int32, "rel": np.int32, "score": np.float32}
CHUNK_ROWS = 200_000


def _dtype(column: str, type_: str):
    if type_ == TEXT:
        return object
    return DTYPES.get(column, np.int64 if type_ == INT else np.float32)


def file_format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".trec":
        return "trec"
    return "tsv"


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty", line=1)


# ---------------------------------------------------------------- reading


def _convert(value: str, type_: str, column: str, path: Path, line: int):
    if type_ == TEXT:
        if not value.strip():
            raise InputError(path, f"empty {column}", line)
        return value
    try:
        return int(value) if type_ == INT else float(value)
    except ValueError:
        kind = "an integer" if type_ == INT else "a number"
        raise InputError(path, f"{column} {value[:40]!r} is not {kind}", line) from None


def _iter_tsv(path: Path, kind: Kind, chunk_rows: int) -> Iterator[pd.DataFrame]:
    layout = kind.layout
    types = dict(zip(kind.columns, kind.types))
    types.setdefault("iter", TEXT)
    width = len(layout)
    keep = [i for i, c in enumerate(layout) if c in kind.columns]
    rows: list[list] = []
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(path, f"undecodable bytes (not UTF-8) at byte {exc.start}", line_no) from None
            text = text.rstrip("\r\n")
            if line_no == 1 and text.lstrip("\ufeff") == "\t".join(kind.tsv_header or ()):
                continue
            if not text.strip() and kind.loose_tsv:
                continue
            fields = text.split() if kind.loose_tsv else text.split("\t")
            if len(fields) != width:
                raise InputError(path, f"expected {width} tab-separated columns ({', '.join(layout)}), "
                                       f"found {len(fields)}", line_no)
            rows.append([line_no] + [_convert(fields[i], types[layout[i]], layout[i], path, line_no) for i in keep])
            if len(rows) >= chunk_rows:
                yield _frame(rows, kind)
                rows = []
    if rows:
        yield _frame(rows, kind)


def _frame(rows: list[list], kind: Kind) -> pd.DataFrame:
    data = list(zip(*rows))
    frame = pd.DataFrame({c: np.asarray(data[i + 1], dtype=_dtype(c, t))
                          for i, (c, t) in enumerate(zip(kind.columns, kind.types))})
    frame.attrs["lines"] = np.asarray(data[0], dtype=np.int64)
    return frame


def _iter_parquet(path: Path, kind: Kind, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(path, f"not a readable Parquet file ({exc})") from None
    missing = [c for c in kind.columns if c not in parquet.schema_arrow.names]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; a {kind.name} file has "
                               f"{', '.join(kind.columns)}")
    if parquet.metadata.num_rows == 0:
        raise InputError(path, "file has no rows")
    offset = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(kind.columns)):
        frame = batch.to_pandas()
        lines = np.arange(offset + 1, offset + len(frame) + 1, dtype=np.int64)
        for column, type_ in zip(kind.columns, kind.types):
            values = frame[column]
            bad = values.isna().to_numpy().copy()
            if type_ == TEXT:
                bad = bad | values.astype(str).str.strip().eq("").to_numpy()
            elif type_ == INT and not pd.api.types.is_integer_dtype(values):
                as_num = pd.to_numeric(values, errors="coerce")
                bad = bad | as_num.isna().to_numpy() | (as_num % 1 != 0).fillna(True).to_numpy()
            if bad.any():
                what = "empty" if type_ == TEXT else "missing or non-integer" if type_ == INT else "missing"
                raise InputError(path, f"{what} {column} (row {lines[bad.argmax()]})", int(lines[bad.argmax()]))
            frame[column] = values.astype(_dtype(column, type_)) if type_ != TEXT else values.astype(object)
        frame.attrs["lines"] = lines
        offset += len(frame)
        yield frame


def _iter_trec(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    kind = Kind("trec", ("qid", "pid", "rank", "score"), (INT, INT, INT, FLOAT))
    rows: list[list] = []
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            fields = raw.decode("utf-8", errors="replace").split()
            if not fields:
                continue
            if len(fields) != 6:
                raise InputError(path, f"expected 6 fields (qid Q0 pid rank score tag), found {len(fields)}", line_no)
            rows.append([line_no] + [_convert(fields[i], t, c, path, line_no)
                                     for i, c, t in ((0, "qid", INT), (2, "pid", INT), (3, "rank", INT),
                                                     (4, "score", FLOAT))])
            if len(rows) >= chunk_rows:
                yield _frame(rows, kind)
                rows = []
    if rows:
        yield _frame(rows, kind)


def iter_table(path, kind: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield validated DataFrames of at most ``chunk_rows`` rows; ``frame.attrs['lines']`` holds line numbers.

    Uniqueness of ids is checked across chunks with a sorted-array merge, not a Python set, so an
    8.8M-passage collection costs 70 MB for the check rather than gigabytes.
    """
    path = Path(path)
    spec = KINDS[kind]
    _check_exists(path)
    fmt = file_format(path)
    if fmt == "trec":
        if kind != "run":
            raise InputError(path, f"a .trec file holds a run, not {kind}")
        chunks = _iter_trec(path, chunk_rows)
    elif fmt == "parquet":
        chunks = _iter_parquet(path, spec, chunk_rows)
    else:
        chunks = _iter_tsv(path, spec, chunk_rows)
    seen = np.empty(0, dtype=np.int64)
    any_rows = False
    for frame in chunks:
        any_rows = True
        if spec.unique:
            ids = frame[spec.unique].to_numpy()
            seen = _check_unique(path, spec.unique, ids, frame.attrs["lines"], seen)
        yield frame
    if not any_rows:
        raise InputError(path, "file has no data rows", line=1)


def _check_unique(path, column, ids, lines, seen) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup_inside = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if sorted_ids.size and (seen.size == 0 or sorted_ids[0] > seen[-1]) and not dup_inside.size:
        return np.concatenate([seen, sorted_ids])  # the usual case: ids ascend through the file
    dup_before = np.isin(ids, seen)
    candidates = [lines[order[dup_inside + 1]]] if dup_inside.size else []
    if dup_before.any():
        candidates.append(lines[dup_before])
    if candidates:
        line = int(np.min(np.concatenate(candidates)))
        value = ids[np.flatnonzero(lines == line)[0]]
        raise InputError(path, f"duplicate {column} {value}", line)
    return np.union1d(seen, sorted_ids)


def read_table(path, kind: str) -> pd.DataFrame:
    """Read a whole (small) file of one kind: queries, qrels, runs, negatives."""
    frames = list(iter_table(path, kind))
    lines = np.concatenate([f.attrs.pop("lines") for f in frames])  # pandas cannot compare array attrs in concat
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    frame.attrs["lines"] = lines
    return frame


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the final file the mode a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _clean_text(values) -> list[str]:
    # A tab or newline inside a text field would shift every later column of the TSV.
    return [" ".join(str(v).split()) for v in values]


def write_table(frame: pd.DataFrame, path, kind: str) -> Path:
    """Write ``frame`` (with the kind's columns) atomically as TSV or Parquet, by extension."""
    spec = KINDS[kind]
    path = Path(path)
    columns = {}
    for column, type_ in zip(spec.columns, spec.types):
        if column not in frame:
            raise ValueError(f"{kind} frame lacks column {column}")
        values = frame[column]
        columns[column] = _clean_text(values) if type_ == TEXT else values.to_numpy().astype(_dtype(column, type_))
    fmt = file_format(path)
    with atomic_output(path) as tmp:
        if fmt == "parquet":
            pq.write_table(pa.table(columns), tmp)
        elif fmt == "trec":
            raise ValueError("use write_trec for TREC run files")
        else:
            out = pd.DataFrame(columns)
            if kind == "qrels":
                out.insert(1, "iter", 0)
            out.to_csv(tmp, sep="\t", header=list(spec.tsv_header) if spec.tsv_header else False, index=False,
                       quoting=3, float_format="%.6f" if kind == "run" else None, lineterminator="\n")
    return path


def write_trec(run: pd.DataFrame, path, tag: str) -> Path:
    """TREC run export: ``qid Q0 pid rank score tag``, readable by trec_eval and ir-measures."""
    tag = "_".join(str(tag).split()) or "run"
    with atomic_output(path) as tmp, open(tmp, "w") as out:
        for qid, pid, rank, score in zip(run["qid"].to_numpy(), run["pid"].to_numpy(), run["rank"].to_numpy(),
                                         run["score"].to_numpy()):
            out.write(f"{qid} Q0 {pid} {rank} {score:.6f} {tag}\n")
    return Path(path)


def sort_run(run: pd.DataFrame) -> pd.DataFrame:
    """Contract order: qid ascending, then rank."""
    return run.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)


def fingerprint(path, sample_bytes: int = 1 << 20) -> str:
    """Cheap identity of a (possibly multi-GB) file: size plus a hash of its first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(sample_bytes))
        if size > sample_bytes:
            handle.seek(max(size - sample_bytes, sample_bytes))
            digest.update(handle.read(sample_bytes))
    return digest.hexdigest()[:16]
