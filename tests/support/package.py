"""The package as a user installs it: a wheel built from a copy of the repository, installed
with its dependencies into a fresh virtual environment outside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ROOT

# pip may fetch setuptools (the build) and the dependencies from the package index.
PIP_TIMEOUT = 600.0
# What the build must not see: local state that is no part of a clone.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".redis",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
)


def outside_environment() -> dict[str, str]:
    """Ours, minus what would point a child at the repository's code or venv, or at a Redis:
    an installed command must run on what it installed."""
    dropped = {"PYTHONPATH", "VIRTUAL_ENV", "REDIS_URL", "PYTHONHOME"}
    return {
        **{k: v for k, v in os.environ.items() if k not in dropped},
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def run(args: list[str | Path], cwd: Path, timeout: float = 60.0) -> str:
    """Run `args` in `cwd` with outside_environment(); its stdout, failing the test with its
    output when it fails."""
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=outside_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def build_wheel(directory: Path) -> Path:
    """A wheel of the repository (pip's build, in a copy of its files so the work tree gets no
    build/ or egg-info); its path."""
    source = directory / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = directory / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, source],
        cwd=directory,
        timeout=PIP_TIMEOUT,
    )
    (wheel,) = out.glob("counting_addon-*.whl")
    return wheel


@dataclass
class Installed:
    """A fresh virtual environment with the wheel and its dependencies installed."""

    venv: Path
    seconds: float  # how long creating it and installing took

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(self, *args: str | Path) -> str:
        """One of its commands, from outside the repository; its stdout."""
        return run([self.bin / str(args[0]), *args[1:]], cwd=self.venv.parent)


def install(wheel: Path, directory: Path, extras: str = "embedded") -> Installed:
    """`wheel[extras]` with its dependencies in a new venv in `directory`."""
    started = time.monotonic()
    venv = directory / "venv"
    # From a venv, `-m venv` makes one on the base interpreter: nothing of ours is in it.
    run([sys.executable, "-m", "venv", venv], cwd=directory)
    run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[{extras}]"],
        cwd=directory,
        timeout=PIP_TIMEOUT,
    )
    return Installed(venv, time.monotonic() - started)
