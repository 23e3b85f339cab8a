"""Run the stages on Modal cloud GPUs; data, embedding cache, models and results live on a Modal Volume.

Each stage function runs the stage's own script (``python SCRIPT.py ARGS``) with paths on the volume,
so a stage behaves the same on a cloud GPU as on your machine. The volume is committed after every
stage; a stage stopped part-way resumes from the volume with ``--resume``. See docs/modal.md.

  modal run modal_offload.py --stage prepare_data --dataset sample
  modal run modal_offload.py --stage mine --dataset sample --shards 4
  modal run modal_offload.py --stage finetune --args "--lora --merge --epochs 1" --gpu H100
  modal run --detach modal_offload.py --stage pipeline --dataset msmarco --args "mine: --max-queries 100000"
  python modal_offload.py plan --stage evaluate --args "--model models/sample/full/model --label full"
  python modal_offload.py upload data/mydata data/mydata        # local folder -> volume
  python modal_offload.py download eval/sample out/modal/eval   # volume -> local folder
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import modal

from msmarco_ft import cli, cloud
from msmarco_ft.models import DEFAULT_MODEL

HERE = Path(__file__).resolve().parent
DEFAULT_GPU = "A100-80GB"
DEFAULT_TIMEOUT = 6 * 3600
PIPELINE_TIMEOUT = 24 * 3600  # Modal's upper limit for one call
# Comma-separated names of Modal secrets to attach (for example "wandb,huggingface"): optional, so the app
# runs for a user who has neither account.
SECRET_NAMES = [name for name in os.environ.get("MSMARCO_FT_SECRETS", "").split(",") if name.strip()]

log = logging.getLogger("modal_offload")

image = (
    modal.Image.debian_slim(python_version="3.11")
    # torch==2.13.0 from PyPI on Linux x86_64 is the CUDA build (it pulls the nvidia-* wheels).
    .pip_install_from_requirements(str(HERE / "requirements.txt"))
    .env({"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"})
    .add_local_python_source("msmarco_ft")
)
for _script in cloud.SCRIPTS:  # beside modal_offload.py in /root, where cloud.SCRIPT_DIR finds them
    image = image.add_local_file(HERE / _script, f"/root/{_script}")

app = modal.App(cloud.VOLUME_NAME)
volume = modal.Volume.from_name(cloud.VOLUME_NAME, create_if_missing=True)
secrets = [modal.Secret.from_name(name.strip()) for name in SECRET_NAMES]
CPU = {"image": image, "volumes": {cloud.MOUNT: volume}, "secrets": secrets, "timeout": DEFAULT_TIMEOUT}
GPU = {**CPU, "gpu": DEFAULT_GPU}


def _in_container() -> bool:
    return not modal.is_local()


@contextlib.contextmanager
def _on_volume():
    """Start from what other containers committed; commit even when the stage fails, keeping its resume state."""
    cli.setup_logging()
    if _in_container():
        volume.reload()
    try:
        yield
    finally:
        if _in_container():
            volume.commit()


def _device() -> str | None:
    # In a GPU container a GPU stage must not fall back to the CPU silently (say, a driver too old for the
    # CUDA build of torch): --device cuda makes the script stop with a clear message instead.
    return "cuda" if _in_container() else None


def _stage(name: str, dataset: str, args, resume: bool) -> dict:
    with _on_volume():
        return cloud.run_stage(name, dataset, list(args), resume, _device())


@app.function(**CPU)
def prepare_data(dataset: str = "sample", args=(), resume: bool = False) -> dict:
    return _stage("prepare_data", dataset, args, resume)


@app.function(**GPU)
def mine(dataset: str = "sample", args=(), resume: bool = False) -> dict:
    return _stage("mine", dataset, args, resume)


@app.function(**CPU)
def sample_negatives(dataset: str = "sample", args=(), resume: bool = False) -> dict:
    return _stage("sample_negatives", dataset, args, resume)


@app.function(**CPU)
def build_triplets(dataset: str = "sample", args=(), resume: bool = False) -> dict:
    return _stage("build_triplets", dataset, args, resume)


@app.function(**GPU)
def finetune(dataset: str = "sample", args=(), resume: bool = False) -> dict:
    return _stage("finetune", dataset, args, resume)


@app.function(**GPU)
def evaluate(dataset: str = "sample", args=(), resume: bool = False) -> dict:
    return _stage("evaluate", dataset, args, resume)


@app.function(**GPU)
def latency(dataset: str = "sample", args=(), resume: bool = False) -> dict:
    return _stage("latency", dataset, args, resume)


@app.function(**GPU)
def mine_shard(dataset: str, args, index: int, count: int) -> dict | None:
    with _on_volume():
        return cloud.mine_shard(dataset, list(args), index, count, _device())


@app.function(**{**CPU, "memory": 32768})  # MiB: one shard's run plus the merged top-k of every query
def merge_shards(dataset: str, args, count: int) -> dict:
    with _on_volume():
        return cloud.merge_shards(dataset, list(args), count)


STAGE_FUNCTIONS = {"prepare_data": prepare_data, "mine": mine, "sample_negatives": sample_negatives,
                   "build_triplets": build_triplets, "finetune": finetune, "evaluate": evaluate, "latency": latency}


def dispatch(name: str, dataset: str, args: list[str], resume: bool = False, shards: int = 1,
             gpu: str = DEFAULT_GPU, timeout: int = DEFAULT_TIMEOUT, remote: bool = True) -> dict:
    """Run one stage: in Modal containers (``remote``) or here through ``.local()``; ``mine`` fans out in shards."""
    if name == "mine" and shards > 1:
        jobs = [(dataset, args, index, shards) for index in range(shards)]  # shards always resume
        if remote:
            parts = list(mine_shard.with_options(gpu=gpu, timeout=timeout).starmap(jobs))
            merged = merge_shards.with_options(timeout=timeout).remote(dataset, args, shards)
        else:  # the local stand-in for .starmap: shards side by side, each its own script process
            with concurrent.futures.ThreadPoolExecutor(max_workers=shards) as pool:
                parts = list(pool.map(lambda job: mine_shard.local(*job), jobs))
            merged = merge_shards.local(dataset, args, shards)
        return {**merged, "parts": [part for part in parts if part]}
    function = STAGE_FUNCTIONS[name]
    if not remote:
        return function.local(dataset, args, resume)
    options = {"gpu": gpu, "timeout": timeout} if cloud.STAGES[name].gpu else {"timeout": timeout}
    return function.with_options(**options).remote(dataset, args, resume)


@app.function(**{**CPU, "timeout": PIPELINE_TIMEOUT})
def pipeline(dataset: str = "sample", stage_args: str = "", shards: int = 1, gpu: str = DEFAULT_GPU,
             timeout: int = DEFAULT_TIMEOUT, model: str = DEFAULT_MODEL) -> list[dict]:
    """The whole flow, one stage after another; a finished stage (its output on the volume) is skipped, an
    unfinished one resumes, so re-running the pipeline after an interruption continues where it stopped."""
    cli.setup_logging()
    lay = cloud.Layout(cloud.volume_root(), dataset)
    done = []
    for name, extra in cloud.pipeline_steps(lay, cloud.parse_stage_args(stage_args), model):
        if _in_container():
            volume.reload()
        output = cloud.STAGES[name].output(lay, extra)
        if output.exists():
            log.info("%s: %s exists, skipped", name, output)
            done.append({"stage": name, "output": str(output), "skipped": True})
            continue
        done.append(dispatch(name, dataset, extra, cloud.STAGES[name].resumable, shards, gpu, timeout,
                             remote=_in_container()))
    return done


@app.local_entrypoint()
def launch(stage: str = "pipeline", dataset: str = "sample", args: str = "", gpu: str = DEFAULT_GPU,
           timeout: int = DEFAULT_TIMEOUT, shards: int = 1, resume: bool = False, model: str = DEFAULT_MODEL) -> None:
    """modal run modal_offload.py --stage STAGE [--dataset NAME] [--args "SCRIPT ARGS"] [--gpu G] [--shards N]

    ``--model`` is the pipeline's base model; a single stage takes its model in ``--args``."""
    if stage == "pipeline":
        results = pipeline.remote(dataset, args, shards, gpu, timeout, model)
    elif stage in cloud.STAGES:
        if resume and not cloud.STAGES[stage].resumable:
            raise SystemExit(f"error: stage {stage} has no --resume; re-run it (with --args --overwrite)")
        results = [dispatch(stage, dataset, shlex.split(args), resume, shards, gpu, timeout)]
    else:
        raise SystemExit(f"error: unknown stage {stage!r}; stages: pipeline, {', '.join(cloud.STAGES)}")
    for result in results:
        print(json.dumps(result))


# ---------------------------------------------------------------- local helpers: no container is started


def _volume_command(args) -> list[str]:
    force = ["--force"] if args.force else []
    if args.command == "upload":
        return ["modal", "volume", "put", *force, args.volume, args.local, "/" + args.remote.lstrip("/")]
    return ["modal", "volume", "get", *force, args.volume, "/" + args.remote.lstrip("/"), args.local]


def _plan(args) -> list[str]:
    lay = cloud.Layout(Path(args.root), args.dataset)
    if args.stage == "pipeline":
        steps = cloud.pipeline_steps(lay, cloud.parse_stage_args(args.args), args.model)
    else:
        steps = [(args.stage, shlex.split(args.args))]
    return [shlex.join(["python", cloud.STAGES[name].script, *cloud.stage_argv(name, lay, extra)])
            for name, extra in steps]


@cli.script
def main(argv: list[str] | None = None) -> int:
    parser = cli.parser_for(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print the script command each stage runs on the volume",
                          formatter_class=cli.HelpFormatter)
    plan.add_argument("--stage", default="pipeline", choices=["pipeline", *cloud.STAGES],
                      help="stage whose command to print; pipeline prints every step")
    plan.add_argument("--dataset", default="sample", help="folder name under data/ on the volume")
    plan.add_argument("--args", default="", help="script arguments (write --args=--lora for a single flag); for "
                                                 "the pipeline 'STAGE: ARGS; STAGE: ARGS'")
    plan.add_argument("--root", default=cloud.MOUNT, help="volume root as a container sees it")
    plan.add_argument("--model", default=DEFAULT_MODEL, help="the pipeline's base model")
    for name, what in (("upload", "copy a local file or folder onto the volume (modal volume put)"),
                       ("download", "copy a file or folder from the volume here (modal volume get)")):
        cmd = sub.add_parser(name, help=what, formatter_class=cli.HelpFormatter)
        first, second = ("local", "remote") if name == "upload" else ("remote", "local")
        cmd.add_argument(first, help=f"{first} path" + (" (relative to the volume root)" if first == "remote" else ""))
        cmd.add_argument(second, help=f"{second} path" + (" (relative to the volume root)" if second == "remote"
                                                          else ""))
        cmd.add_argument("--volume", default=cloud.VOLUME_NAME, help="Modal volume name")
        cmd.add_argument("--force", action="store_true", help="replace files that already exist")
        cmd.add_argument("--dry-run", action="store_true", help="print the modal command instead of running it")
    args = parser.parse_args(argv)
    if args.command == "plan":
        print("\n".join(_plan(args)))
        return 0
    command = _volume_command(args)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
