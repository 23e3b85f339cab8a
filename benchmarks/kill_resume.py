"""Reliability: SIGKILL the mining and fine-tuning stages at random moments, resume, and check the result.

    python benchmarks/kill_resume.py --rounds 3 --seed 0 [--model tiny|PATH] [--work /tmp/kill-resume]

Mining: the resumed run's output must equal an uninterrupted run's, byte for byte after loading.
Fine-tuning: the resumed run must start from the last checkpoint written before the kill and finish.
Both: no file under a final output name may be half-written (every final file must load), and no
temporary file may be left behind once the resumed run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
FT_STEPS = 60
sys.path.insert(0, str(ROOT))

from msmarco_ft import cli, formats  # noqa: E402
from msmarco_ft.models import build_random_model  # noqa: E402


def make_data(folder: Path, passages: int, queries: int, seed: int) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(300)])
    collection = pd.DataFrame({"pid": np.arange(passages), "text": [" ".join(rng.choice(words, 12))
                                                                     for _ in range(passages)]})
    qids = np.arange(1000, 1000 + queries)
    positives = rng.choice(passages, queries, replace=False)
    query_text = [" ".join(collection.text[p].split()[:5]) for p in positives]
    files = {"collection": folder / "collection.tsv", "queries": folder / "queries.tsv", "qrels": folder / "qrels.tsv"}
    formats.write_table(collection, files["collection"], "collection")
    formats.write_table(pd.DataFrame({"qid": qids, "text": query_text}), files["queries"], "queries")
    formats.write_table(pd.DataFrame({"qid": qids, "pid": positives, "rel": 1}), files["qrels"], "qrels")
    triplets = pd.DataFrame({"query": query_text, "positive": collection.text[positives].tolist(),
                             "negative": collection.text[rng.choice(passages, queries)].tolist()})
    files["triplets"] = formats.write_table(triplets, folder / "triplets.parquet", "triplets")
    return files


def launch(script: str, args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as sink:
        return subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 300) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.tmp"))


def mining_round(work: Path, files: dict, model: str, rng: random.Random, reference: pd.DataFrame) -> dict:
    out = work / "mining" / f"run{rng.randrange(10**6)}.parquet"
    args = ["--model", model, "--filtered-queries", str(files["queries"]), "--collection", str(files["collection"]),
            "--qrels", str(files["qrels"]), "--output", str(out), "--cache-dir", "none", "--chunk-size", "100",
            "--top-k", "50", "--device", "cpu"]
    state = out.with_name(out.name + ".state")
    proc = launch("process_train_queries.py", args, work / "mining.log")
    # A kill that lands after the output was complete interrupted nothing: it does not count as one.
    killed = kill_when(proc, state.exists, rng.uniform(0.0, 0.2)) and not out.exists()
    proc.wait()
    code = subprocess.call([sys.executable, str(ROOT / "process_train_queries.py"), *args, "--resume"], cwd=ROOT,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    run = formats.read_table(out, "run")
    same = code == 0 and run[["qid", "pid", "rank"]].equals(reference[["qid", "pid", "rank"]]) and np.allclose(
        run["score"], reference["score"], atol=1e-6)
    return {"stage": "mining", "killed": killed, "resume_exit": code,
            "identical": bool(same), "state_left": state.exists(), "tmp_left": leftovers(out.parent)}


def finetune_round(work: Path, files: dict, model: str, rng: random.Random) -> dict:
    out = work / "finetune" / f"ft{rng.randrange(10**6)}"
    args = ["--model", model, "--train-file", str(files["triplets"]), "--output-dir", str(out),
            "--max-steps", str(FT_STEPS), "--save-steps", "6", "--eval-steps", "20", "--batch-size", "8",
            "--val-queries", "16", "--no-wandb", "--allow-regression", "--device", "cpu"]
    checkpoints = out / "checkpoints"
    proc = launch("finetune.py", args, work / "finetune.log")
    killed = kill_when(proc, lambda: checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*")),
                       rng.uniform(0.0, 2.0)) and not (out / "result.json").exists()
    proc.wait()
    saved = sorted(int(p.name.rsplit("-", 1)[1]) for p in checkpoints.glob("checkpoint-*")) if killed else []
    code = subprocess.call([sys.executable, str(ROOT / "finetune.py"), *args, "--resume"], cwd=ROOT,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    resumed = result.get("resumed_from")
    # The trainer resumes from the newest complete checkpoint; a kill mid-save may leave that one torn,
    # in which case the one before it is the right place to continue.
    continued = (not killed) or (resumed is not None and int(resumed.rsplit("-", 1)[1]) in saved[-2:])
    return {"stage": "finetune", "killed": killed, "checkpoints_at_kill": saved, "resumed_from": resumed,
            "resume_exit": code, "continued_from_last_checkpoint": bool(continued and code == 0),
            "finished_steps": result.get("steps"), "tmp_left": leftovers(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="kills per stage")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments and the data")
    parser.add_argument("--model", default="tiny", help="'tiny' (a 2-layer random BERT) or a model folder")
    parser.add_argument("--work", default="out/kill-resume", help="scratch folder")
    parser.add_argument("--stages", default="mining,finetune", help="comma-separated: mining, finetune")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    model = str(build_random_model(work / "model")) if args.model == "tiny" else args.model
    files = make_data(work / "data", passages=2000, queries=120, seed=args.seed)
    results = []
    if "mining" in args.stages:
        reference_path = work / "mining" / "reference.parquet"
        subprocess.check_call([sys.executable, str(ROOT / "process_train_queries.py"), "--model", model,
                               "--filtered-queries", str(files["queries"]), "--collection", str(files["collection"]),
                               "--output", str(reference_path), "--cache-dir", "none", "--chunk-size", "100",
                               "--top-k", "50", "--device", "cpu", "--overwrite"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reference = formats.read_table(reference_path, "run")
        results += [mining_round(work, files, model, rng, reference) for _ in range(args.rounds)]
    if "finetune" in args.stages:
        results += [finetune_round(work, files, model, rng) for _ in range(args.rounds)]
    ok = all((r.get("identical", True) and r.get("continued_from_last_checkpoint", True) and not r["tmp_left"]
              and not r.get("state_left", False) and r["resume_exit"] == 0) for r in results)
    for r in results:
        print(json.dumps(r))
    print(f"{sum(r['killed'] for r in results)} of {len(results)} runs killed mid-stage; "
          f"{'all resumed correctly' if ok else 'FAILURES above'}")
    if args.json:
        cli.write_json(args.json, {"ok": ok, "rounds": results})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
