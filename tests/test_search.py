"""The search core and process_train_queries.py: exactness, ties, padding, cache, resume, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import process_train_queries
from msmarco_ft import formats, search
from msmarco_ft.search import RunningTopK, exact_topk, run_frame

WORDS = "apple banana cherry delta eagle fjord grape harbor island jungle kettle lemon meadow".split()


def brute_force(queries, passages, ids, k):
    """Reference top-k: the full score matrix, each row sorted by (score desc, pid asc)."""
    scores = queries @ passages.T
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row in range(len(queries)):
        order = np.lexsort((ids, -scores[row]))[:k]
        out_scores[row, :len(order)] = scores[row, order]
        out_ids[row, :len(order)] = ids[order]
    return out_scores, out_ids


def integer_embeddings(rng, n, dim=6):
    # Small integers make every dot product exact in float32 and ties very common: the hard case for ordering.
    return rng.integers(-2, 3, size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("n_queries,n_passages,k,chunk", [
    (300, 5000, 200, 5000),   # one chunk, several query blocks
    (40, 3001, 50, 700),      # chunk size not dividing the collection
    (25, 900, 300, 128),      # k larger than a chunk
    (10, 60, 100, 17),        # fewer passages than k: padded rows
])
def test_chunked_topk_equals_brute_force(n_queries, n_passages, k, chunk):
    rng = np.random.default_rng(n_passages)
    queries, passages = integer_embeddings(rng, n_queries), integer_embeddings(rng, n_passages)
    ids = rng.permutation(10 * n_passages)[:n_passages].astype(np.int64)
    expected = brute_force(queries, passages, ids, k)
    state = RunningTopK(n_queries, k)
    for start in range(0, n_passages, chunk):
        state.add(queries, passages[start:start + chunk], ids[start:start + chunk])
    for got in (state.arrays(), exact_topk(queries, passages, ids, k)):
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_torch_key_path_used_on_cuda_gives_the_same_result(dtype):
    # No GPU here: run the CUDA code path (torch keys, float16 scores, small blocks) on CPU tensors.
    rng = np.random.default_rng(5)
    queries, passages = integer_embeddings(rng, 90), integer_embeddings(rng, 2500)
    ids = rng.permutation(9000)[:2500].astype(np.int64)
    state = RunningTopK(90, 120)
    state.on_gpu, state.dtype, state.keys = True, dtype, torch.from_numpy(state.keys)
    state.q_block, state.p_block = 32, 256
    for start in range(0, 2500, 700):
        state.add(queries, passages[start:start + 700], ids[start:start + 700])
    expected = brute_force(queries, passages, ids, 120)
    np.testing.assert_array_equal(state.arrays()[1], expected[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(6)
    queries, passages = integer_embeddings(rng, 500), integer_embeddings(rng, 70000)
    ids = np.arange(70000, dtype=np.int64)
    on_gpu = exact_topk(queries, passages, ids, 200, device="cuda")
    for got, want in zip(on_gpu, exact_topk(queries, passages, ids, 200)):
        np.testing.assert_array_equal(got, want)


def test_float_embeddings_match_numpy_scores():
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((50, 32)).astype(np.float32)
    passages = rng.standard_normal((4000, 32)).astype(np.float32)
    scores, pids = exact_topk(queries, passages, np.arange(4000), 20)
    ref_scores, ref_pids = brute_force(queries, passages, np.arange(4000), 20)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert (pids == ref_pids).mean() > 0.99  # only float rounding may swap near-equal neighbours


def test_ties_break_by_lower_pid_and_padding():
    queries = np.ones((1, 2), dtype=np.float32)
    passages = np.array([[1, 0], [0, 1], [2, 0], [1, 0]], dtype=np.float32)  # scores 1, 1, 2, 1
    scores, pids = exact_topk(queries, passages, np.array([9, 4, 7, 5]), 6)
    assert pids.tolist() == [[7, 4, 5, 9, -1, -1]]
    assert scores[0, :4].tolist() == [2, 1, 1, 1] and np.isneginf(scores[0, 4:]).all()


def test_shard_merge_equals_whole():
    rng = np.random.default_rng(3)
    queries, passages = integer_embeddings(rng, 30), integer_embeddings(rng, 2000)
    ids = np.arange(2000, dtype=np.int64)
    whole = exact_topk(queries, passages, ids, 40)
    merged = RunningTopK.from_arrays(*exact_topk(queries, passages[:1100], ids[:1100], 40))
    merged.merge(*exact_topk(queries, passages[1100:], ids[1100:], 40))
    np.testing.assert_array_equal(merged.arrays()[1], whole[1])


def test_pids_out_of_range_are_refused():
    with pytest.raises(ValueError, match="pids must lie"):
        exact_topk(np.ones((1, 2), np.float32), np.ones((2, 2), np.float32), np.array([1, -5]), 1)


def test_run_frame_drops_pads_and_orders_by_qid():
    frame = run_frame([20, 10], np.array([[0.5, -np.inf], [0.9, 0.8]], np.float32), np.array([[3, -1], [1, 2]]))
    assert frame[["qid", "pid", "rank"]].values.tolist() == [[10, 1, 1], [10, 2, 2], [20, 3, 1]]
    assert frame["rank"].dtype == np.int32 and frame["score"].dtype == np.float32


# ---------------------------------------------------------------- process_train_queries.py on the tiny model


@pytest.fixture()
def mining_data(tmp_path):
    rng = np.random.default_rng(0)
    collection = pd.DataFrame({"pid": np.arange(230, dtype=np.int64) * 2 + 1,
                               "text": [" ".join(rng.choice(WORDS, 5)) for _ in range(230)]})
    queries = pd.DataFrame({"qid": np.arange(12, dtype=np.int64) + 500,
                            "text": [" ".join(rng.choice(WORDS, 3)) for _ in range(12)]})
    qrels = pd.DataFrame({"qid": queries["qid"], "pid": collection["pid"][:12] * 1, "rel": 1})
    paths = {"collection": tmp_path / "collection.tsv", "queries": tmp_path / "queries.tsv",
             "qrels": tmp_path / "qrels.tsv"}
    for kind, frame in (("collection", collection), ("queries", queries), ("qrels", qrels)):
        formats.write_table(frame, paths[kind], kind)
    return paths


def mine(tiny_model, paths, output, *extra):
    return process_train_queries.main(["--model", str(tiny_model), "--queries", str(paths["queries"]),
                                       "--collection", str(paths["collection"]), "--output", str(output),
                                       "--top-k", "30", "--chunk-size", "50", "--no-progress", *extra])


class CountingEncoder:
    """Wraps search.encode_texts, counting calls; optionally fails on passage chunk n (0-based)."""

    def __init__(self, monkeypatch, fail_on_chunk=None):
        self.real, self.calls, self.fail_on_chunk = search.encode_texts, [], fail_on_chunk
        monkeypatch.setattr(search, "encode_texts", self)

    def __call__(self, model, texts, batch_size, progress=False):
        self.calls.append(len(texts))
        if self.fail_on_chunk is not None and len(self.calls) - 2 == self.fail_on_chunk:  # call 1 encodes the queries
            raise RuntimeError("injected failure")
        return self.real(model, texts, batch_size, progress)


def test_run_is_exact_over_the_whole_collection(tiny_model, mining_data, tmp_path):
    output = tmp_path / "out" / "run.parquet"
    assert mine(tiny_model, mining_data, output, "--cache-dir", "none", "--qrels", str(mining_data["qrels"])) == 0
    run = formats.read_table(output, "run")
    from msmarco_ft.models import load_model

    model = load_model(str(tiny_model), "cpu")
    collection = formats.read_table(mining_data["collection"], "collection")
    queries = formats.read_table(mining_data["queries"], "queries")
    chunks = [search.encode_texts(model, collection["text"][s:s + 50].tolist(), 64) for s in range(0, 230, 50)]
    query_emb = search.encode_texts(model, queries["text"].tolist(), 256)
    scores, pids = exact_topk(query_emb, np.concatenate(chunks), collection["pid"].to_numpy(), 30)
    expected = run_frame(queries["qid"].to_numpy(), scores, pids)
    assert run["pid"].tolist() == expected["pid"].tolist()
    assert run.groupby("qid")["rank"].apply(list).map(lambda r: r == list(range(1, 31))).all()
    sidecar = formats.read_table(tmp_path / "out" / "run.positive_scores.parquet", "positive_scores")
    assert len(sidecar) == 12
    own = np.einsum("ij,ij->i", query_emb, np.concatenate(chunks)[:12])
    np.testing.assert_allclose(sidecar.sort_values("qid")["score"], own, atol=1e-5)
    config = json.loads((tmp_path / "out" / "run.parquet.config.json").read_text())
    assert config["stats"]["chunks"] == 5 and config["stats"]["encoded"] == 230


def test_warm_cache_does_no_encoding(tiny_model, mining_data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    counter = CountingEncoder(monkeypatch)
    assert mine(tiny_model, mining_data, first, "--cache-dir", str(cache)) == 0
    assert counter.calls == [12, 50, 50, 50, 50, 30]  # the queries, then five chunks
    (manifest,) = cache.glob("*/manifest.json")
    assert json.loads(manifest.read_text())["complete"] == [0, 1, 2, 3, 4]
    counter.calls.clear()
    assert mine(tiny_model, mining_data, second, "--cache-dir", str(cache)) == 0
    assert counter.calls == [12]  # the queries only: every chunk came from the cache
    assert first.read_text() == second.read_text()
    (manifest.parent / "chunk_00002.npy").unlink()  # a damaged cache: only the lost chunk is encoded again
    counter.calls.clear()
    assert mine(tiny_model, mining_data, second, "--cache-dir", str(cache), "--overwrite") == 0
    assert counter.calls == [12, 50] and first.read_text() == second.read_text()


def test_resume_after_a_failure_matches_an_uninterrupted_run(tiny_model, mining_data, tmp_path, monkeypatch):
    whole, broken = tmp_path / "whole.tsv", tmp_path / "broken.tsv"
    assert mine(tiny_model, mining_data, whole, "--cache-dir", "none", "--qrels", str(mining_data["qrels"])) == 0
    CountingEncoder(monkeypatch, fail_on_chunk=3)
    with pytest.raises(RuntimeError, match="injected"):
        mine(tiny_model, mining_data, broken, "--cache-dir", "none", "--qrels", str(mining_data["qrels"]))
    state = tmp_path / "broken.tsv.state"
    assert json.loads((state / "state.json").read_text())["next_chunk"] == 3 and not broken.exists()
    # Starting again without --resume would throw the finished chunks away: refused.
    assert mine(tiny_model, mining_data, broken, "--cache-dir", "none") == 2
    # Nor may a different configuration continue it.
    assert mine(tiny_model, mining_data, broken, "--cache-dir", "none", "--qrels", str(mining_data["qrels"]),
                "--resume", "--chunk-size", "40") == 2
    counter = CountingEncoder(monkeypatch)
    assert mine(tiny_model, mining_data, broken, "--cache-dir", "none", "--qrels", str(mining_data["qrels"]),
                "--resume") == 0
    assert counter.calls == [12, 50, 30]  # queries, then only the two chunks not yet done
    assert broken.read_text() == whole.read_text()
    sidecars = [formats.read_table(tmp_path / f"{n}.positive_scores.tsv", "positive_scores") for n in ("whole",
                                                                                                     "broken")]
    pd.testing.assert_frame_equal(*sidecars)
    assert not state.exists()


def test_resume_on_a_current_output_is_a_no_op(tiny_model, mining_data, tmp_path, monkeypatch):
    output = tmp_path / "run.tsv"
    assert mine(tiny_model, mining_data, output, "--cache-dir", "none") == 0
    before = output.stat().st_mtime_ns
    counter = CountingEncoder(monkeypatch)
    assert mine(tiny_model, mining_data, output, "--cache-dir", "none", "--resume") == 0
    assert counter.calls == [] and output.stat().st_mtime_ns == before
    assert mine(tiny_model, mining_data, output, "--cache-dir", "none") == 2  # exists, no --overwrite
    assert mine(tiny_model, mining_data, output, "--cache-dir", "none", "--top-k", "5", "--resume") == 2


def test_bad_input_exits_2(tiny_model, mining_data, tmp_path, capsys):
    (tmp_path / "queries_bad.tsv").write_text("1\tfine\nnot-a-number\tbroken\n")
    paths = {**mining_data, "queries": tmp_path / "queries_bad.tsv"}
    assert mine(tiny_model, paths, tmp_path / "run.tsv", "--cache-dir", "none") == 2
    assert "queries_bad.tsv:2: qid 'not-a-number' is not an integer" in capsys.readouterr().err
    paths = {**mining_data, "collection": tmp_path / "missing.tsv"}
    assert mine(tiny_model, paths, tmp_path / "run.tsv", "--cache-dir", "none") == 2
    assert not (tmp_path / "run.tsv").exists()


@pytest.mark.parametrize(("n_queries", "n_passages", "k"), [(1, 5000, 1), (3, 2049, 1), (2, 10, 20)])
def test_exact_topk_small_k_over_many_blocks(n_queries, n_passages, k):
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((n_queries, 8)).astype(np.float32)
    passages = rng.standard_normal((n_passages, 8)).astype(np.float32)
    _, pids = exact_topk(queries, passages, np.arange(n_passages, dtype=np.int64), k)
    width = min(k, n_passages)
    expected = np.argsort(-(queries @ passages.T), axis=1, kind="stable")[:, :width]
    assert np.array_equal(pids[:, :width], expected)
