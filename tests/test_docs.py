"""The documentation cannot drift: what README.md lists comes from conf/, and its examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, components

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("group", ["model", "data", "net", "device"])
def test_the_readme_lists_every_option_of_a_component_group(group):
    row = next(line for line in README.splitlines() if line.startswith(f"| `{group}=` |"))
    listed = [o.strip() for o in row.split("|")[2].split(",")]
    assert listed == components(group), (listed, components(group))


def test_the_readme_has_a_section_for_every_model():
    assert sorted(re.findall(r"^### (\w+):", README, re.M)) == components("model")


def python_blocks(text: str, section: str) -> list[str]:
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, re.S)


@pytest.mark.slow
def test_the_python_api_example_runs_as_written(tmp_path, data_root):
    (example,) = python_blocks(README, "Python API")
    env = {**os.environ, "AECLI_DATA_ROOT": str(data_root), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Run(" in proc.stdout and "torch.Size([8, 16])" in proc.stdout
    assert list(tmp_path.glob("outputs/*/*/checkpoints/best.pt"))  # the run folder the command line would make
