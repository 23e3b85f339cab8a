"""The file contracts: round trips in both encodings, every validation error, atomic writes."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import write_lines

from msmarco_ft import formats
from msmarco_ft.errors import InputError

FRAMES = {
    "collection": pd.DataFrame({"pid": [3, 1, 7], "text": ["a passage", "another one", 'with "quotes" in it']}),
    "queries": pd.DataFrame({"qid": [10, 20], "text": ["what is a", "who is b"]}),
    "qrels": pd.DataFrame({"qid": [10, 10, 20], "pid": [3, 1, 7], "rel": [1, 2, 1]}),
    "run": pd.DataFrame({"qid": [10, 10, 20], "pid": [3, 1, 7], "rank": [1, 2, 1], "score": [0.9, 0.5, 0.25]}),
    "negatives": pd.DataFrame({"qid": [10, 20], "pid": [7, 3], "rank": [55, 120]}),
    "triplets": pd.DataFrame({"query": ["q a"], "positive": ["p one"], "negative": ["n two"]}),
}


@pytest.mark.parametrize("kind", sorted(FRAMES))
@pytest.mark.parametrize("suffix", [".tsv", ".parquet"])
def test_round_trip(tmp_path, kind, suffix):
    path = formats.write_table(FRAMES[kind], tmp_path / f"x{suffix}", kind)
    back = formats.read_table(path, kind)
    expected = FRAMES[kind]
    assert list(back.columns) == list(expected.columns)
    for column in expected:
        if column == "score":
            assert back[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-6)
        else:
            assert back[column].tolist() == expected[column].tolist()
    if kind in ("collection", "queries", "qrels", "negatives", "run"):
        assert back[expected.columns[0]].dtype == "int64"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_tsv_layouts_match_ms_marco(tmp_path):
    formats.write_table(FRAMES["qrels"], tmp_path / "q.tsv", "qrels")
    assert (tmp_path / "q.tsv").read_text().splitlines()[0] == "10\t0\t3\t1"
    formats.write_table(FRAMES["run"], tmp_path / "r.tsv", "run")
    lines = (tmp_path / "r.tsv").read_text().splitlines()
    assert lines[0] == "query_id\tpassage_id\trank\tscore" and lines[1].startswith("10\t3\t1\t0.9")
    formats.write_trec(FRAMES["run"], tmp_path / "r.trec", "my model")
    assert (tmp_path / "r.trec").read_text().splitlines()[0] == "10 Q0 3 1 0.900000 my_model"
    back = formats.read_table(tmp_path / "r.trec", "run")
    assert back["pid"].tolist() == [3, 1, 7]


def test_qrels_accept_spaces(tmp_path):
    path = write_lines(tmp_path / "qrels.tsv", ["1 0 5 1", "2\t0\t6\t1"])
    assert formats.read_table(path, "qrels")["pid"].tolist() == [5, 6]


def test_streaming_chunks_keep_line_numbers(tmp_path):
    path = write_lines(tmp_path / "c.tsv", [f"{i}\tpassage {i}" for i in range(25)])
    chunks = list(formats.iter_table(path, "collection", chunk_rows=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert chunks[2].attrs["lines"].tolist() == [21, 22, 23, 24, 25]


BAD = [
    ("collection", ["1\tok", "2\ttoo\tmany"], 2, "expected 2 tab-separated columns"),
    ("collection", ["1\tok", "x2\ttext"], 2, "is not an integer"),
    ("collection", ["1\tok", "2\t  "], 2, "empty text"),
    ("collection", ["1\tok", "2\tfine", "1\tagain"], 3, "duplicate pid 1"),
    ("queries", ["5\tq", "5\tq again"], 2, "duplicate qid 5"),
    ("qrels", ["1 0 5 1", "1 0 6 yes"], 2, "rel 'yes' is not an integer"),
]


@pytest.mark.parametrize(("kind", "lines", "line_no", "message"), BAD)
def test_validation_names_file_and_line(tmp_path, kind, lines, line_no, message):
    path = write_lines(tmp_path / "bad.tsv", lines)
    with pytest.raises(InputError) as caught:
        formats.read_table(path, kind)
    assert str(caught.value).startswith(f"{path}:{line_no}: ")
    assert message in str(caught.value)


def test_duplicate_across_chunks(tmp_path):
    path = write_lines(tmp_path / "c.tsv", [f"{i}\tp" for i in range(12)] + ["3\tagain"])
    with pytest.raises(InputError, match=r":13: duplicate pid 3"):
        list(formats.iter_table(path, "collection", chunk_rows=5))


def test_undecodable_empty_missing(tmp_path):
    bad = tmp_path / "bin.tsv"
    bad.write_bytes(b"1\tfine\n2\t\xff\xfe broken\n")
    with pytest.raises(InputError, match=r"bin.tsv:2: undecodable bytes"):
        formats.read_table(bad, "collection")
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty.tsv:1: file is empty"):
        formats.read_table(empty, "queries")
    with pytest.raises(InputError, match=r"nope.tsv: no such file"):
        formats.read_table(tmp_path / "nope.tsv", "queries")


def test_parquet_validation(tmp_path):
    path = tmp_path / "q.parquet"
    pd.DataFrame({"qid": [1, 2], "words": ["a", "b"]}).to_parquet(path)
    with pytest.raises(InputError, match="missing column"):
        formats.read_table(path, "queries")
    pd.DataFrame({"qid": [1, 2], "text": ["a", " "]}).to_parquet(path)
    with pytest.raises(InputError, match=r"q.parquet:2: empty text"):
        formats.read_table(path, "queries")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.tsv"
    target.write_text("old contents\n")
    with pytest.raises(RuntimeError), formats.atomic_output(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash midway")
    assert target.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]


def test_fingerprint_changes_with_content(tmp_path):
    a = write_lines(tmp_path / "a.tsv", ["1\tx"])
    first = formats.fingerprint(a)
    write_lines(a, ["1\ty"])
    assert formats.fingerprint(a) != first


def test_atomic_write_gives_normal_file_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = formats.write_table(FRAMES["queries"], tmp_path / "q.tsv", "queries")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
