"""Where aecli's own files are, and how the user runs it: the lowest layer."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """conf/ inside the installed package (a wheel), else the repository's top-level conf/."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if packaged.is_dir() else here.parent / "conf"


def aecli_command() -> str:
    """How the user ran aecli, for the commands aecli prints: `uv run aecli` under `uv run`, else `aecli`."""
    return "uv run aecli" if os.environ.get("UV_RUN_RECURSION_DEPTH") else "aecli"
