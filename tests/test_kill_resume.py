"""SIGKILL mid-stage, then --resume: mining output equals an uninterrupted run; training continues."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import kill_resume  # noqa: E402


def test_killed_stages_resume_correctly(tmp_path):
    report = tmp_path / "kill.json"
    code = kill_resume.main(["--rounds", "1", "--seed", "3", "--work", str(tmp_path / "work"), "--json", str(report)])
    rounds = json.loads(report.read_text())["rounds"]
    assert code == 0
    assert [r["stage"] for r in rounds] == ["mining", "finetune"]
    mining, finetune = rounds
    assert mining["identical"] and not mining["state_left"] and not mining["tmp_left"]
    assert finetune["continued_from_last_checkpoint"] and finetune["finished_steps"] >= kill_resume.FT_STEPS
    if finetune["killed"]:
        assert finetune["resumed_from"] is not None
