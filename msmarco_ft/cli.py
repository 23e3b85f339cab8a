"""What every script shares: logging, the error exit, device flags, output guards and config.json."""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import logging
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .errors import InputError
from .formats import atomic_output, fingerprint

log = logging.getLogger("msmarco_ft")
EXIT_BAD_INPUT = 2
_VERSIONED = ("torch", "sentence-transformers", "transformers", "peft", "numpy", "pyarrow", "faiss-cpu")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default and keeps the docstring's command examples as written."""


def parser_for(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def script(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a script's ``main``: a user's mistake becomes one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapped


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where to run: auto picks cuda when present")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="auto: bf16 (or fp16) on GPU, fp32 on CPU")


def refuse_overwrite(paths, overwrite: bool) -> None:
    """Stop before any work when a final output exists and the user did not ask to replace it."""
    for path in paths:
        if Path(path).exists() and not overwrite:
            raise InputError(path, "already exists; pass --overwrite to replace it")


def versions() -> dict[str, str]:
    found = {"msmarco-ft": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def write_config(out_dir, args: argparse.Namespace | dict, inputs: dict | None = None, extra: dict | None = None,
                 name: str = "config.json") -> Path:
    """Record the resolved arguments, package versions and input fingerprints beside the outputs."""
    out_dir = Path(out_dir)
    resolved = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    prints = {}
    for key, path in (inputs or {}).items():
        if path is not None and Path(path).is_file():
            prints[key] = {"path": str(path), "fingerprint": fingerprint(path)}
    body = {"arguments": resolved, "versions": versions(), "inputs": prints, **(extra or {})}
    with atomic_output(out_dir / name) as tmp:
        tmp.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return out_dir / name


def write_json(path, data) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)


def path_print(path) -> str | None:
    """Identity of an input: a file's fingerprint, a folder's from its three largest files, else the name."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return fingerprint(path)
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: (-p.stat().st_size, str(p)))
        return ",".join(fingerprint(p) for p in files[:3])
    return str(path)


def signature(args: argparse.Namespace, inputs: dict,
              ignore=("resume", "overwrite", "verbose", "no_progress")) -> dict:
    """What makes an output current: the arguments that shape it and the fingerprints of its inputs."""
    settings = {k: v for k, v in vars(args).items() if k not in ignore}
    body = {"arguments": settings, "fingerprints": {name: path_print(p) for name, p in inputs.items()}}
    return json.loads(json.dumps(body, default=str))


def is_current(config_path, expected: dict) -> bool:
    """True when ``config_path`` exists and records ``expected`` as its signature."""
    try:
        return json.loads(Path(config_path).read_text()).get("signature") == expected
    except (OSError, json.JSONDecodeError):
        return False

