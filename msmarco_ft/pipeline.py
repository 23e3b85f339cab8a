"""Run stage scripts in order as subprocesses, skipping those whose outputs are complete and current.

A stage is current when its outputs exist and a stamp records the same command line and the same
fingerprints of its input files. A stage that was interrupted is re-run with ``--resume`` by its own
script, which continues from its saved state. Subprocesses (not imports) keep each script exactly what
a user runs by hand, and keep one stage's memory from leaking into the next.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .formats import atomic_output, fingerprint

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    script: str
    args: list[str]
    inputs: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    ok_codes: tuple[int, ...] = (0,)


def _input_prints(paths: list[Path]) -> dict[str, str]:
    prints = {}
    for path in paths:
        path = Path(path)
        if path.is_file():
            prints[str(path)] = fingerprint(path)
        elif path.is_dir():
            # A model folder changes when any weight file changes: fingerprint its largest files.
            files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: (-p.stat().st_size, str(p)))
            prints[str(path)] = ",".join(fingerprint(p) for p in files[:3])
    return prints


class Runner:
    def __init__(self, root: Path, stamps: Path, python: str = sys.executable):
        self.root = root
        self.stamps = stamps
        self.python = python
        self.timings: dict[str, dict] = {}

    def _stamp_path(self, stage: Stage) -> Path:
        return self.stamps / f"{stage.name}.json"

    def _wanted(self, stage: Stage) -> dict:
        return {"script": stage.script, "args": stage.args, "inputs": _input_prints(stage.inputs)}

    def is_current(self, stage: Stage) -> bool:
        stamp = self._stamp_path(stage)
        if not stamp.exists() or not all(Path(p).exists() for p in stage.outputs):
            return False
        return json.loads(stamp.read_text()).get("wanted") == self._wanted(stage)

    def run(self, stage: Stage) -> int:
        if self.is_current(stage):
            log.info("[%s] up to date", stage.name)
            self.timings[stage.name] = {"seconds": 0.0, "skipped": True}
            return 0
        for path in stage.inputs:
            if not Path(path).exists():
                raise InputError(path, f"needed by stage {stage.name} but missing")
        command = [self.python, str(self.root / stage.script), *stage.args]
        log.info("[%s] %s", stage.name, " ".join(command[1:]))
        start = time.perf_counter()
        code = subprocess.call(command, cwd=self.root)
        seconds = time.perf_counter() - start
        self.timings[stage.name] = {"seconds": round(seconds, 1), "skipped": False, "exit": code}
        if code not in stage.ok_codes:
            raise StageFailed(stage.name, code)
        self.stamps.mkdir(parents=True, exist_ok=True)
        with atomic_output(self._stamp_path(stage)) as tmp:
            tmp.write_text(json.dumps({"wanted": self._wanted(stage), "seconds": seconds}, indent=2))
        log.info("[%s] done in %.1f s", stage.name, seconds)
        return code


class StageFailed(Exception):
    def __init__(self, name: str, code: int):
        super().__init__(f"stage {name} failed with exit status {code}")
        self.name = name
        self.code = code
