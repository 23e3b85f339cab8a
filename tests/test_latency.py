"""Latency statistics on known timings, the JSON both scripts write, the LoRA comparison and the onnx skip."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

import inference_times
import inference_times_lora
from msmarco_ft import latency
from msmarco_ft.errors import InputError
from tests.conftest import write_lines

STATS = {"n", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "qps"}
DOC = Path(__file__).resolve().parents[1] / "docs" / "latency.md"
SMALL = ["--num-queries", "4", "--batch-sizes", "1,4", "--repeats", "2", "--warmup", "1", "--top-k", "5",
         "--throughput-passages", "8", "--batch-size", "4", "--device", "cpu", "--threads", "1"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    # --threads sets torch's process-wide thread count; later test files get theirs back.
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_percentiles_of_known_timings():
    # 1..100 ms: numpy's linear rule puts p95 at 95 + 0.05 * (96 - 95) and p99 at 99 + 0.01.
    stats = latency.summarize([i / 1000 for i in range(1, 101)], items=100)
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p95_ms"] == pytest.approx(95.05)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["mean_ms"] == pytest.approx(50.5)
    assert stats["qps"] == pytest.approx(100 / 5.05, rel=1e-4)
    assert (stats["n"], stats["min_ms"], stats["max_ms"]) == (100, 1.0, 100.0)


def test_percentiles_of_four_batches():
    # Four calls of 2 items taking 10, 20, 30, 40 ms: 8 items in 0.1 s.
    stats = latency.summarize([0.04, 0.01, 0.03, 0.02], items=8)
    assert (stats["p50_ms"], stats["p95_ms"], stats["p99_ms"]) == pytest.approx((25.0, 38.5, 39.7))
    assert stats["qps"] == pytest.approx(80.0)
    with pytest.raises(ValueError):
        latency.summarize([], items=1)


def test_cycled_batches_are_full_and_cover_every_item():
    items = list(range(5))
    assert latency.cycled_batches(items, 2) == [[0, 1], [2, 3], [4, 0]]
    assert latency.cycled_batches(items, 8) == [[0, 1, 2, 3, 4, 0, 1, 2]]
    assert latency.cycled_batches(items, 5) == [items]


def test_batch_sizes_parse_and_reject():
    assert latency.parse_batch_sizes("32,1, 8,8") == [1, 8, 32]
    for bad in ("1,x", "0,8", ""):
        with pytest.raises(InputError):
            latency.parse_batch_sizes(bad)


def test_ratios_are_medians_with_a_geometric_mean_over_batch_sizes():
    def fig(means, pps, load):
        return {"encode": {size: {"mean_ms": 99.0, "p50_ms": m} for size, m in means.items()},
                "passages_per_s": pps, "load_s": load, "end_to_end": {"mean_ms": 99.0, "p50_ms": means["1"] + 1}}

    figures = {"base": fig({"1": 10.0, "8": 40.0}, 100.0, 1.0), "other": fig({"1": 20.0, "8": 20.0}, 50.0, 2.0)}
    ratios = latency.ratios_to(figures, "base")
    assert ratios["other"]["encode"] == pytest.approx(1.0)  # 2x slower at 1, 2x faster at 8
    assert ratios["other"]["encode_p50"] == {"1": 2.0, "8": 0.5}
    assert ratios["other"]["passages"] == pytest.approx(2.0)
    assert ratios["other"]["end_to_end"] == pytest.approx(21 / 11, rel=1e-4)
    assert ratios["base"]["encode"] == pytest.approx(1.0)


@pytest.fixture
def files(tmp_path):
    queries = write_lines(tmp_path / "queries.tsv", [f"{q}\tquestion number {q} about topic {q % 3}"
                                                     for q in range(1, 9)])
    collection = write_lines(tmp_path / "collection.tsv", [f"{p}\tpassage {p} says something about topic {p % 3}"
                                                           for p in range(30)])
    return queries, collection


def _check_figures(fig: dict, batch_sizes: list[str], repeats: int = 2) -> None:
    assert sorted(fig["encode"], key=int) == batch_sizes
    for stats in fig["encode"].values():
        assert set(stats) == STATS and 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    e2e = fig["end_to_end"]
    assert STATS | {"encode_mean_ms", "search_mean_ms", "encode_share", "search_share"} == set(e2e)
    assert e2e["encode_share"] + e2e["search_share"] == pytest.approx(1.0, abs=1e-3)
    assert fig["passages_per_s"] > 0 and fig["collection_encode"]["passages"] == 8 * repeats


def test_inference_times_writes_the_documented_json(tiny_model, files, tmp_path, capsys):
    queries, collection = files
    out = tmp_path / "lat" / "tiny.json"
    argv = ["--model", str(tiny_model), "--filtered-queries", str(queries), "--collection", str(collection),
            "--max-passages", "20", "--output", str(out), *SMALL]
    assert inference_times.main(argv) == 0
    result = json.loads(out.read_text())
    for key in ("schema", "model", "label", "backend", "device", "precision", "settings", "load_s", "encode",
                "end_to_end", "passages_per_s", "collection_encode", "search", "hardware"):
        assert key in result
    _check_figures(result, ["1", "4"])
    search = result["search"]
    assert (search["passages"], search["dim"], search["top_k"]) == (20, 32, 5)
    assert sorted(search["by_block"], key=int) == ["1", "4"] and search["matmul_block"] == 4
    assert search["matmul_ms"] > 0 and search["matmul_ratio"] > 0
    hardware = result["hardware"]
    assert hardware["cpu_model"] and hardware["torch_threads"] >= 1 and hardware["gpu"] is None
    assert "torch" in hardware["versions"]
    assert (out.parent / "tiny.config.json").exists()
    assert "end-to-end split: encode" in capsys.readouterr().out
    documented = set(re.findall(r"`([a-z_0-9]+)`", DOC.read_text()))
    assert set(result) | set(search) | set(result["end_to_end"]) | set(hardware) <= documented
    assert inference_times.main(argv) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def test_search_reads_the_embedding_cache(tiny_model, files, tmp_path):
    queries, collection = files
    cache = tmp_path / "cache"
    for name in ("a", "b"):
        argv = ["--model", str(tiny_model), "--queries", str(queries), "--collection", str(collection),
                "--cache-dir", str(cache), "--chunk-size", "7", "--output", str(tmp_path / f"{name}.json"), *SMALL]
        assert inference_times.main(argv) == 0
        search = json.loads((tmp_path / f"{name}.json").read_text())["search"]
        assert search["passages"] == 30 and search["source"].startswith("cache")
    assert len(list(cache.rglob("chunk_*.pids.npy"))) == 5  # 30 passages in chunks of 7, written once


def test_onnx_missing_is_one_clear_line(tiny_model, files, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    queries, collection = files
    out = tmp_path / "onnx.json"
    argv = ["--model", str(tiny_model), "--queries", str(queries), "--collection", str(collection),
            "--max-passages", "10", "--backend", "onnx", "--output", str(out), *SMALL]
    assert inference_times.main(argv) == 0
    err_lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert err_lines == ["onnx backend skipped: onnxruntime is not installed "
                         "(pip install 'sentence-transformers[onnx]' to measure it)"]
    result = json.loads(out.read_text())
    assert result["onnx"] == {"skipped": err_lines[0]} and result["backend"] == "torch" and "encode" in result


def test_bad_flags_exit_2(tiny_model, files, tmp_path, capsys):
    queries, collection = files
    base = ["--model", str(tiny_model), "--queries", str(queries), "--collection", str(collection),
            "--output", str(tmp_path / "x.json")]
    assert inference_times.main([*base, "--batch-sizes", "1,zero"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err
    assert inference_times.main([*base, "--max-passages", "5", "--collection", str(tmp_path / "none.tsv")]) == 2
    assert "none.tsv: no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    assert inference_times.main([*base, "--cache-dir", "none"]) == 2
    assert "pass --max-passages" in capsys.readouterr().err
    assert inference_times_lora.main([*base, "--max-passages", "5"]) == 2
    assert "not a LoRA adapter folder" in capsys.readouterr().err


@pytest.fixture
def adapter(tiny_model, tmp_path):
    import peft
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model), device="cpu")
    # Random B weights (not peft's zero init), so merging has something to fold in and the diff means something.
    model.add_adapter(peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
    model.save(str(tmp_path / "ft-lora" / "model"))
    return tmp_path / "ft-lora"  # laid out as finetune.py --lora writes it


def test_lora_compares_base_unmerged_and_merged(adapter, files, tmp_path, capsys):
    queries, collection = files
    out = tmp_path / "lora.json"
    argv = ["--model", str(adapter), "--queries", str(queries), "--collection", str(collection),
            "--max-passages", "20", "--output", str(out), *SMALL, "--repeats", "3"]
    assert inference_times_lora.main(argv) == 0
    result = json.loads(out.read_text())
    names = ["base", "unmerged", "merged"]
    assert result["order"] == [names, names[1:] + names[:1], names[2:] + names[:2]]
    assert list(result["variants"]) == names and result["label"] == "ft-lora"
    for fig in result["variants"].values():
        _check_figures(fig, ["1", "4"], repeats=3)
        assert fig["load_s"] > 0
    assert result["ratios"]["base"]["encode"] == pytest.approx(1.0)
    for name in ("unmerged", "merged"):
        assert set(result["ratios"][name]) == {"encode", "encode_p50", "passages", "load", "end_to_end"}
    assert result["max_abs_diff"]["merged_vs_unmerged"] < 1e-5
    assert result["max_abs_diff"]["merged_vs_base"] > 1e-3
    assert result["merged_within_5pct"] == (result["ratios"]["merged"]["encode"] <= 1.05)
    assert result["search"]["passages"] == 20
    printed = capsys.readouterr().out
    assert "max |merged - unmerged|" in printed and "merged / base encoding time" in printed
