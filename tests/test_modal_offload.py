"""modal_offload.py without Modal credentials: the app is defined, stage bodies run here via ``.local()`` and
write what the scripts write, and sharded mining merges to exactly the unsharded run."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import shlex
from pathlib import Path

import modal
import numpy as np
import pandas as pd
import pytest
from conftest import write_lines

import modal_offload
from msmarco_ft import cloud, search
from msmarco_ft.errors import InputError
from msmarco_ft.formats import read_table

# Modal warns that a .local() call sees no mounted volume: here the volume root is a temporary folder.
pytestmark = pytest.mark.filterwarnings("ignore:The .* function is executing locally")
WORDS = ["river", "castle", "violin", "orchid", "falcon", "harbor", "copper", "meadow", "glacier", "lantern"]


@pytest.fixture
def volume(tmp_path, monkeypatch):
    """A volume root with a tiny dataset in the layout prepare_data writes."""
    root = tmp_path / "vol"
    data = root / "data" / "tiny"
    write_lines(data / "collection.tsv", [f"{i}\t{WORDS[i % 10]}  {WORDS[(i * 3) % 10]} note {i} on "
                                          f"{WORDS[(i * 7) % 10]}" for i in range(45)])
    write_lines(data / "queries.train.tsv", [f"{q}\tthe {WORDS[q % 10]} and {WORDS[(q + 3) % 10]}" for q in range(8)])
    write_lines(data / "qrels.train.tsv", [f"{q}\t0\t{(q * 5) % 45}\t1" for q in range(8)])
    write_lines(data / "queries.dev.small.tsv", [f"{q}\t{WORDS[q % 10]} or {WORDS[q - 7]}" for q in range(8, 12)])
    write_lines(data / "qrels.dev.small.tsv", [f"{q}\t0\t{q + 20}\t1" for q in range(8, 12)])
    monkeypatch.setenv(cloud.ROOT_ENV, str(root))
    return root


def test_app_and_every_stage_function_are_defined():
    assert isinstance(modal_offload.app, modal.App)
    names = [*cloud.STAGES, "mine_shard", "merge_shards", "pipeline"]
    for name in names:
        assert isinstance(getattr(modal_offload, name), modal.Function), name
    assert set(modal_offload.STAGE_FUNCTIONS) == set(cloud.STAGES)
    assert modal_offload.DEFAULT_GPU == "A100-80GB"
    assert all((cloud.SCRIPT_DIR / stage.script).name == stage.script for stage in cloud.STAGES.values())


@pytest.mark.parametrize("name", list(cloud.STAGES))
def test_every_default_flag_is_one_the_script_knows(name):
    """The stage table names only flags that the script's --help documents."""
    stage = cloud.STAGES[name]
    module = importlib.import_module(stage.script.removesuffix(".py"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main(["--help"])
    argv = cloud.stage_argv(name, cloud.Layout(cloud.volume_root(), "x"), [], stage.resumable, device="cuda")
    for flag in (a for a in argv if a.startswith("--")):
        assert flag in out.getvalue(), f"{stage.script} has no {flag}"


def test_user_arguments_come_last_and_name_the_outputs(tmp_path):
    lay = cloud.Layout(tmp_path, "sample")
    argv = cloud.stage_argv("finetune", lay, ["--lora", "--epochs", "1"], resume=True)
    assert argv[-4:] == ["--lora", "--epochs", "1", "--resume"]
    assert cloud.stage_argv("finetune", lay, ["--device", "cpu"], device="cuda")[-4:] == ["--device", "cuda",
                                                                                         "--device", "cpu"]
    assert "--device" not in cloud.stage_argv("build_triplets", lay, [], device="cuda")
    assert argv[argv.index("--output-dir") + 1] == str(tmp_path / "models" / "sample" / "lora")
    assert cloud.STAGES["finetune"].output(lay, ["--lora"]) == tmp_path / "models/sample/lora/result.json"
    assert cloud.STAGES["evaluate"].output(lay, ["--model", "m/x", "--merge"]) == lay.evals / "x-merged.metrics.json"
    assert cloud.STAGES["mine"].output(lay, ["--output", "runs/a.tsv"]) == tmp_path / "runs/a.tsv"
    assert cloud.flag_value(["--top-k", "5", "--top-k=7"], "--final-k", "--top-k") == "7"
    with pytest.raises(InputError, match="no --resume"):
        cloud.stage_argv("latency", lay, [], resume=True)
    assert cloud.parse_stage_args("mine: --max-queries 10; finetune: --epochs 1 ; mine: --chunk-size 5") == {
        "mine": ["--max-queries", "10", "--chunk-size", "5"], "finetune": ["--epochs", "1"]}
    with pytest.raises(InputError, match="STAGE: ARGS"):
        cloud.parse_stage_args("--epochs 1")
    steps = cloud.pipeline_steps(lay, {"finetune": ["--epochs", "2"]})
    assert [name for name, _ in steps][:5] == ["prepare_data", "evaluate", "mine", "sample_negatives",
                                               "build_triplets"]
    assert all(extra[-2:] == ["--epochs", "2"] for name, extra in steps if name == "finetune")


def test_shard_ranges_follow_chunk_boundaries():
    assert cloud.shard_ranges(10, 3, 2) == [(0, 4), (4, 6), (6, 10)]
    assert cloud.shard_ranges(10, 8, 4) == [(0, 4), (4, 8), (8, 10)]  # no more shards than chunks
    ranges = cloud.shard_ranges(1_000_003, 7, 200_000)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1_000_003
    assert all(a[1] == b[0] and a[1] % 200_000 == 0 for a, b in zip(ranges, ranges[1:]))


def test_write_slice_keeps_the_bytes(tmp_path):
    source = write_lines(tmp_path / "c.tsv", [f"{i}\ttext  with\u00e9 {i} " for i in range(10)])
    piece = cloud.write_slice(source, tmp_path / "piece.tsv", 3, 7)
    assert piece.read_bytes() == b"".join(source.read_bytes().splitlines(keepends=True)[3:7])
    assert cloud.count_rows(source) == 10
    frame = pd.DataFrame({"pid": np.arange(200_000, dtype=np.int64), "text": [f"t  {i}" for i in range(200_000)]})
    frame.to_parquet(tmp_path / "c.parquet", row_group_size=70_000)
    piece = cloud.write_slice(tmp_path / "c.parquet", tmp_path / "piece.parquet", 65_000, 140_001)
    pd.testing.assert_frame_equal(pd.read_parquet(piece), frame.iloc[65_000:140_001].reset_index(drop=True))
    assert cloud.count_rows(piece) == 75_001


def test_merge_of_shard_topk_equals_the_whole():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(30, 16)).astype(np.float32)
    passages = rng.normal(size=(100, 16)).astype(np.float32)
    passages[7] = passages[63]  # a tie across shards: the lower pid must win
    pids = np.arange(1000, 1100, dtype=np.int64)
    qids = np.arange(500, 530)
    whole = search.run_frame(qids, *search.exact_topk(queries, passages, pids, 20))
    parts = [search.run_frame(qids, *search.exact_topk(queries, passages[a:b], pids[a:b], 20))
             for a, b in cloud.shard_ranges(100, 3, 16)]
    pd.testing.assert_frame_equal(cloud.merge_runs(parts, 20), whole)
    with pytest.raises(InputError, match="different queries"):
        cloud.merge_runs([parts[0], parts[1][parts[1]["qid"] != 500]], 20)


def _mine_args(tiny_model):
    return ["--model", str(tiny_model), "--chunk-size", "10", "--top-k", "12", "--device", "cpu", "--no-progress"]


def test_stages_run_locally_like_the_scripts(volume, tiny_model, tmp_path):
    args = _mine_args(tiny_model)
    result = modal_offload.mine.local("tiny", args)
    assert result["stage"] == "mine" and result["output"] == str(volume / "runs/tiny/base_train_top200.parquet")
    remote_run = read_table(result["output"], "run")

    # The same script, called by hand on the same files, writes the same run and sidecar.
    import process_train_queries

    data = volume / "data" / "tiny"
    by_hand = tmp_path / "by_hand" / "run.parquet"
    assert process_train_queries.main(
        ["--filtered-queries", str(data / "queries.train.tsv"), "--collection", str(data / "collection.tsv"),
         "--qrels", str(data / "qrels.train.tsv"), "--output", str(by_hand), "--cache-dir",
         str(tmp_path / "cache"), *args]) == 0
    pd.testing.assert_frame_equal(remote_run, read_table(by_hand, "run"))
    sidecar = "base_train_top200.positive_scores.parquet"
    pd.testing.assert_frame_equal(read_table(volume / "runs/tiny" / sidecar, "positive_scores"),
                                  read_table(by_hand.with_name("run.positive_scores.parquet"), "positive_scores"))
    assert len(remote_run) == 8 * 12

    # Mining in 2 shards (one container each on Modal; one after another here) merges to the same files.
    sharded_args = args + ["--output", "runs/tiny/sharded.parquet"]
    merged = modal_offload.dispatch("mine", "tiny", sharded_args, shards=2, remote=False)
    assert merged["shards"] == 2 and [p["rows"] for p in merged["parts"]] == [[0, 20], [20, 45]]
    pd.testing.assert_frame_equal(read_table(volume / "runs/tiny/sharded.parquet", "run"), remote_run)
    pd.testing.assert_frame_equal(read_table(volume / "runs/tiny/sharded.positive_scores.parquet", "positive_scores"),
                                  read_table(volume / "runs/tiny" / sidecar, "positive_scores"))
    config = json.loads((volume / "runs/tiny/sharded.parquet.config.json").read_text())
    assert [s["rows"] for s in config["shards"]] == [[0, 20], [20, 45]]

    # The next stages read the mined run from the volume, as they would remotely.
    negatives = modal_offload.sample_negatives.local("tiny", ["--rank-min", "2", "--rank-max", "12"])
    assert len(read_table(negatives["output"], "negatives")) == 8
    triplets = modal_offload.build_triplets.local("tiny", [])
    frame = read_table(triplets["output"], "triplets")
    assert len(frame) == 8 and list(frame.columns) == ["query", "positive", "negative"]


def test_prepare_data_locally_like_the_script(volume, tmp_path):
    sizes = ["--passages", "300", "--train-queries", "20", "--dev-queries", "10"]
    result = modal_offload.prepare_data.local("gen", sizes)
    assert result["argv"][:2] == ["--sample", str(volume / "data" / "gen")]
    import prepare_data

    assert prepare_data.main(["--sample", str(tmp_path / "by_hand"), *sizes]) == 0
    for name in ("collection.tsv", "queries.train.tsv", "sorted_qrels.train.tsv", "filtered_queries.dev.tsv"):
        assert (volume / "data" / "gen" / name).read_bytes() == (tmp_path / "by_hand" / name).read_bytes()
    assert cloud.STAGES["prepare_data"].output(cloud.Layout(volume, "gen"), []).exists()
    # A folder uploaded by hand only gets the filtered/sorted files the original scripts expect.
    uploaded = modal_offload.prepare_data.local("tiny", [])
    assert uploaded["argv"] == ["--from-dir", str(volume / "data" / "tiny")]
    assert (volume / "data" / "tiny" / "filtered_queries.train.tsv").exists()


def test_evaluate_locally_like_the_script(volume, tiny_model, tmp_path):
    args = ["--model", str(tiny_model), "--label", "tiny", "--chunk-size", "16", "--device", "cpu", "--no-progress"]
    result = modal_offload.evaluate.local("tiny", args)
    assert result["output"] == str(volume / "eval" / "tiny" / "tiny.metrics.json")
    import eval_model

    data = volume / "data" / "tiny"
    assert eval_model.main(["--filtered-queries", str(data / "queries.dev.small.tsv"), "--qrels",
                            str(data / "qrels.dev.small.tsv"), "--collection", str(data / "collection.tsv"),
                            "--output-dir", str(tmp_path / "eval"), "--cache-dir", str(tmp_path / "cache"),
                            *args]) == 0
    pd.testing.assert_frame_equal(read_table(volume / "eval/tiny/tiny.run.parquet", "run"),
                                  read_table(tmp_path / "eval/tiny.run.parquet", "run"))
    ours, theirs = (json.loads(p.read_text()) for p in (volume / "eval/tiny/tiny.metrics.json",
                                                         tmp_path / "eval/tiny.metrics.json"))
    assert ours["metrics"] == theirs["metrics"] and ours["metrics"]["MRR@10"] > 0


def test_a_failing_stage_names_its_command(volume):
    with pytest.raises(cloud.StageFailed, match="random_sample.py exited with status 2; command: .*--run "):
        modal_offload.sample_negatives.local("tiny", [])  # nothing mined yet


def test_pipeline_skips_finished_stages(volume):
    lay = cloud.Layout(volume, "tiny")
    for name, extra in cloud.pipeline_steps(lay):
        write_lines(cloud.STAGES[name].output(lay, extra), ["done"])
    results = modal_offload.pipeline.local("tiny")
    assert len(results) == len(cloud.pipeline_steps(lay)) and all(r["skipped"] for r in results)


def test_plan_and_volume_helpers_touch_no_cloud(capsys):
    assert modal_offload.main(["plan", "--stage", "finetune", "--args", "--lora --epochs 1"]) == 0
    line = capsys.readouterr().out.strip()
    assert shlex.split(line)[:2] == ["python", "finetune.py"] and line.endswith("--lora --epochs 1")
    assert modal_offload.main(["plan"]) == 0
    steps = cloud.pipeline_steps(cloud.Layout(Path(cloud.MOUNT), "x"))
    assert len(capsys.readouterr().out.strip().splitlines()) == len(steps)
    assert modal_offload.main(["upload", "data/sample", "data/sample", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "modal volume put msmarco-ft data/sample /data/sample"
    assert modal_offload.main(["download", "eval/sample", "out/eval", "--force", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "modal volume get --force msmarco-ft /eval/sample out/eval"
    assert modal_offload.main(["plan", "--args", "nonsense"]) == 2
    assert "STAGE: ARGS" in capsys.readouterr().err
