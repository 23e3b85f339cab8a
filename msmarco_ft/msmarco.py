"""The real MS MARCO passage files: resumable download, extraction, and the filtered/sorted files.

The original scripts read ``filtered_queries.{train,dev}.tsv`` (only queries that have qrels) and
``sorted_qrels.{train,dev}.tsv`` (qrels ordered by query id); ``filter_and_sort`` writes them for any
folder in MS MARCO layout, the generated sample included. Downloading is hand-written on urllib
because resuming a broken transfer needs an HTTP Range request into a ``.part`` file and a size check,
which neither the standard library nor the installed packages offer ready-made.
"""

from __future__ import annotations

import http.client
import logging
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .errors import InputError
from .formats import atomic_output, read_table, write_table

log = logging.getLogger(__name__)
OFFICIAL_URL = "https://msmarco.z22.web.core.windows.net/msmarcoranking/collectionandqueries.tar.gz"
CONNECT_TIMEOUT = 10.0
BLOCK = 1 << 20
# (queries, qrels) -> (filtered queries, sorted qrels); a folder without the dev.small files uses the full dev set.
SPLITS = {
    "train": (("queries.train.tsv", "qrels.train.tsv"),),
    "dev": (("queries.dev.small.tsv", "qrels.dev.small.tsv"), ("queries.dev.tsv", "qrels.dev.tsv")),
}
ARCHIVE_FILES = ("collection.tsv", "queries.train.tsv", "qrels.train.tsv", "queries.dev.small.tsv",
                 "qrels.dev.small.tsv", "queries.dev.tsv", "qrels.dev.tsv", "queries.eval.small.tsv",
                 "queries.eval.tsv")


def derived_files() -> list[str]:
    return [f"{name}.{split}.tsv" for split in SPLITS for name in ("filtered_queries", "sorted_qrels")]


def _split_sources(folder: Path, split: str) -> tuple[Path, Path]:
    for queries, qrels in SPLITS[split]:
        if (folder / queries).exists() and (folder / qrels).exists():
            return folder / queries, folder / qrels
    queries, qrels = SPLITS[split][0]
    missing = folder / queries if not (folder / queries).exists() else folder / qrels
    raise InputError(missing, f"no such file; an MS MARCO-layout folder holds {queries} and {qrels}")


def filter_and_sort(folder) -> dict[str, int]:
    """Write the original scripts' files beside the MS MARCO files in ``folder``; returns row counts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    if not (folder / "collection.tsv").exists():
        raise InputError(folder / "collection.tsv", "no such file; an MS MARCO-layout folder holds collection.tsv")
    sources = {split: _split_sources(folder, split) for split in SPLITS}
    # Read and check every input before writing anything, so bad input leaves no new file behind.
    tables = {split: (read_table(queries_path, "queries"), read_table(qrels_path, "qrels"))
              for split, (queries_path, qrels_path) in sources.items()}
    counts = {}
    for split, (queries, qrels) in tables.items():
        judged = queries[queries["qid"].isin(qrels["qid"])]
        ordered = qrels.sort_values(["qid", "pid"], kind="stable")
        write_table(judged, folder / f"filtered_queries.{split}.tsv", "queries")
        write_table(ordered, folder / f"sorted_qrels.{split}.tsv", "qrels")
        counts[f"{split}_queries"] = len(queries)
        counts[f"{split}_queries_with_qrels"] = len(judged)
        counts[f"{split}_qrels"] = len(qrels)
        log.info("%s: %d of %d queries have qrels (%s), %d qrels sorted", split, len(judged), len(queries),
                 sources[split][0].name, len(qrels))
    return counts


def _total_size(response) -> int | None:
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def download(url: str, dest, timeout: float = CONNECT_TIMEOUT, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` through ``dest.part``; a second call resumes a broken transfer with Range.

    Any network failure is an InputError (one line, exit 2); only a complete, size-checked file ever gets
    the final name.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part already holds every byte
            os.replace(part, dest)
            return dest
        raise InputError(url, f"download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(url, f"cannot download ({reason}); check the network, or download and extract the "
                              "files yourself and run --from-dir on that folder") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with response:
        if have and response.status != 206:
            log.info("server ignored the resume request: starting %s again", dest.name)
            have = 0
        total = _total_size(response)
        if have:
            log.info("resuming %s at %d bytes", dest.name, have)
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                   disable=not progress)
        try:
            with open(part, "ab" if have else "wb") as out, bar:
                while block := response.read(BLOCK):
                    out.write(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise InputError(url, f"download interrupted after {part.stat().st_size} bytes ({exc}); "
                                  "run the same command again to resume") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise InputError(part, f"download incomplete: {size} of {total} bytes; run the same command again to "
                               "resume")
    os.replace(part, dest)
    return dest


def extract(archive, out_dir, progress: bool = True) -> list[Path]:
    """Extract the MS MARCO files from the archive, each atomically, flattening any folder inside it."""
    archive, out_dir = Path(archive), Path(out_dir)
    written = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in ARCHIVE_FILES]
            if not members:
                raise InputError(archive, f"holds none of the MS MARCO files ({', '.join(ARCHIVE_FILES[:3])}, ...)")
            with tqdm(total=sum(m.size for m in members), unit="B", unit_scale=True, unit_divisor=1024,
                      desc="extract", disable=not progress) as bar:
                for member in members:
                    target = out_dir / Path(member.name).name
                    source = tar.extractfile(member)
                    with atomic_output(target) as tmp, open(tmp, "wb") as out:
                        while block := source.read(BLOCK):
                            out.write(block)
                            bar.update(len(block))
                    written.append(target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(archive, f"not a readable tar.gz archive ({exc}); delete it and download again") from None
    return written


def fetch_msmarco(out_dir, url: str = OFFICIAL_URL, timeout: float = CONNECT_TIMEOUT,
                  progress: bool = True) -> dict[str, int]:
    """Download (or resume), extract, then filter and sort; returns the counts of ``filter_and_sort``."""
    out_dir = Path(out_dir)
    archive = out_dir / Path(url.split("?")[0]).name
    if not archive.exists():
        download(url, archive, timeout=timeout, progress=progress)
    extract(archive, out_dir, progress=progress)
    return filter_and_sort(out_dir)


def count_rows(path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(BLOCK), b""))


def summary_table(counts: dict[str, int]) -> str:
    frame = pd.DataFrame(sorted(counts.items()), columns=["what", "count"])
    return frame.to_string(index=False)
