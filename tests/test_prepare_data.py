"""prepare_data.py: the sample mode, --from-dir filtering/sorting, and the download against a local server."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from msmarco_ft.formats import read_table
from prepare_data import main

SMALL = ["--passages", "400", "--train-queries", "60", "--dev-queries", "30", "--seed", "5"]
DERIVED = ("filtered_queries.train.tsv", "filtered_queries.dev.tsv", "sorted_qrels.train.tsv", "sorted_qrels.dev.tsv")


def msmarco_files() -> dict[str, str]:
    """A tiny MS MARCO-layout folder: unsorted qrels, a query without qrels, two qrels for one query."""
    return {
        "collection.tsv": "0\tpassage zero\n1\tpassage one\n2\tpassage two\n3\tpassage three\n",
        "queries.train.tsv": "30\tthird\n10\tfirst\n20\tno qrels here\n40\tfourth\n",
        "qrels.train.tsv": "40\t0\t3\t1\n10\t0\t1\t1\n30\t0\t2\t1\n10\t0\t0\t1\n",
        "queries.dev.small.tsv": "7\tdev seven\n5\tdev five\n",
        "qrels.dev.small.tsv": "7 0 2 1\n",
    }


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_sample_writes_msmarco_layout_and_the_original_scripts_files(tmp_path, capsys):
    out = tmp_path / "sample"
    assert main(["--sample", str(out), *SMALL]) == 0
    for name in ("collection.tsv", "queries.train.tsv", "qrels.train.tsv", "queries.dev.small.tsv",
                 "qrels.dev.small.tsv", "config.json", *DERIVED):
        assert (out / name).is_file(), name
    assert len(read_table(out / "filtered_queries.train.tsv", "queries")) == 60
    assert len(read_table(out / "sorted_qrels.dev.tsv", "qrels")) == 30
    printed = capsys.readouterr().out
    assert "passages" in printed and "400" in printed and "train_queries_with_qrels" in printed


def test_sample_second_run_is_up_to_date_and_other_args_need_overwrite(tmp_path, capsys):
    out = tmp_path / "sample"
    assert main(["--sample", str(out), *SMALL]) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["--sample", str(out), *SMALL]) == 0
    assert "up to date" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten
    before = (out / "collection.tsv").read_bytes()
    assert main(["--sample", str(out), *SMALL[:-1], "6"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--sample", str(out), *SMALL[:-1], "6", "--overwrite"]) == 0
    assert (out / "collection.tsv").read_bytes() != before


def test_from_dir_filters_and_sorts(tmp_path):
    folder = write_folder(tmp_path / "marco", msmarco_files())
    assert main(["--from-dir", str(folder)]) == 0
    assert (folder / "filtered_queries.train.tsv").read_text() == "30\tthird\n10\tfirst\n40\tfourth\n"
    assert (folder / "sorted_qrels.train.tsv").read_text() == "10\t0\t0\t1\n10\t0\t1\t1\n30\t0\t2\t1\n40\t0\t3\t1\n"
    assert (folder / "filtered_queries.dev.tsv").read_text() == "7\tdev seven\n"
    assert (folder / "sorted_qrels.dev.tsv").read_text() == "7\t0\t2\t1\n"


def test_from_dir_uses_the_full_dev_set_without_dev_small(tmp_path):
    files = msmarco_files()
    files["queries.dev.tsv"] = files.pop("queries.dev.small.tsv")
    files["qrels.dev.tsv"] = files.pop("qrels.dev.small.tsv")
    folder = write_folder(tmp_path / "marco", files)
    assert main(["--from-dir", str(folder)]) == 0
    assert (folder / "filtered_queries.dev.tsv").read_text() == "7\tdev seven\n"


@pytest.mark.parametrize("name, text, where", [
    ("qrels.train.tsv", "40\t0\t3\t1\n10\t0\tx\t1\n", "qrels.train.tsv:2:"),
    ("queries.train.tsv", "30\tthird\n30\tagain\n", "queries.train.tsv:2:"),
    ("queries.dev.small.tsv", "7\tdev seven\tstray column\n", "queries.dev.small.tsv:1:"),
])
def test_from_dir_bad_input_exits_2_with_file_and_line(tmp_path, capsys, name, text, where):
    folder = write_folder(tmp_path / "marco", {**msmarco_files(), name: text})
    assert main(["--from-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and where in errors[0] and "Traceback" not in err
    assert not any((folder / name).exists() for name in (*DERIVED, "config.json"))


def test_from_dir_missing_files_exit_2(tmp_path, capsys):
    assert main(["--from-dir", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    folder = write_folder(tmp_path / "marco", {k: v for k, v in msmarco_files().items() if k != "qrels.train.tsv"})
    assert main(["--from-dir", str(folder)]) == 2
    assert "qrels.train.tsv: no such file" in capsys.readouterr().err
    assert not any((folder / name).exists() for name in DERIVED)


# ---------------------------------------------------------------- download, against 127.0.0.1 only


def archive_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in msmarco_files().items():
            data = text.encode()
            if name == "collection.tsv":  # enough bytes that a cut-off transfer is really partial
                data = "".join(f"{i}\tpassage number {i} with some words\n" for i in range(3000)).encode()
            info = tarfile.TarInfo(f"collectionandqueries/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def server():
    """Serves one tar.gz with Range support; ``state['cut']`` makes the next full response stop halfway."""
    payload = archive_bytes()
    state = {"ranges": [], "cut": False}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            start = 0
            header = self.headers.get("Range")
            state["ranges"].append(header)
            if header:
                start = int(header.split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            body = payload[start:]
            if state["cut"]:
                state["cut"] = False
                body = body[: len(body) // 2]
                self.close_connection = True
            self.wfile.write(body)

        def log_message(self, *args):
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/collectionandqueries.tar.gz", state, payload
    httpd.shutdown()
    httpd.server_close()


def test_msmarco_download_extracts_and_filters(tmp_path, server):
    url, state, payload = server
    out = tmp_path / "marco"
    assert main(["--msmarco", str(out), "--url", url, "--no-progress"]) == 0
    assert (out / "collectionandqueries.tar.gz").read_bytes() == payload
    assert len(read_table(out / "collection.tsv", "collection")) == 3000
    assert (out / "sorted_qrels.train.tsv").read_text().startswith("10\t0\t0\t1\n")
    assert state["ranges"] == [None]


def test_msmarco_broken_download_resumes_with_range(tmp_path, server, capsys):
    url, state, payload = server
    out = tmp_path / "marco"
    state["cut"] = True
    assert main(["--msmarco", str(out), "--url", url, "--no-progress"]) == 2
    assert "run the same command again to resume" in capsys.readouterr().err
    part = out / "collectionandqueries.tar.gz.part"
    assert part.exists() and 0 < part.stat().st_size < len(payload)
    assert not (out / "collectionandqueries.tar.gz").exists() and not (out / "collection.tsv").exists()
    assert main(["--msmarco", str(out), "--url", url, "--no-progress"]) == 0
    assert state["ranges"][-1] == f"bytes={len(payload) // 2}-"
    assert (out / "collectionandqueries.tar.gz").read_bytes() == payload
    assert not part.exists()
    assert (out / "filtered_queries.dev.tsv").read_text() == "7\tdev seven\n"


def test_msmarco_offline_fails_fast_with_one_line_and_writes_nothing(tmp_path, capsys):
    import socket

    with socket.socket() as probe:  # a port nobody listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "marco"
    code = main(["--msmarco", str(out), "--url", f"http://127.0.0.1:{port}/collectionandqueries.tar.gz",
                 "--timeout", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot download" in err
    assert not out.exists()
