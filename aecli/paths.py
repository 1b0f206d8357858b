"""Where aecli's own files are: the lowest layer, imported by anything that composes the configuration."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """conf/ inside the installed package (a wheel), else the repository's top-level conf/."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if packaged.is_dir() else here.parent / "conf"
