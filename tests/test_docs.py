"""The documentation cannot drift: what README.md lists comes from conf/, and its examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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


# -- every documented command runs ------------------------------------------------------------------------------
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = {  # commands the docs show that this test does not run, and why (anything else must run)
    "uv run pytest": "the suite itself",
    "bash .ci/run": "CI itself (installs packages, runs the suite)",
    "uv run python benchmarks/": "benchmarks run for minutes to hours (benchmarks/README.md)",
    "uv run mlflow ui": "a server that runs until stopped",
    "tensorboard --logdir": "a server that runs until stopped",
    "chromium --headless": "the browser; tests/test_report.py opens reports in it",
}
TINY = ["epochs=1", "data.limit=128", "data.val_size=64", "latent_dim=4", "batch_size=64", "eval.at_end=false",
        "report=false", "eval.test_images=200",
        "eval.probe_train_images=200", "eval.jacobian_images=10", "eval.iw_samples=10", "eval.iw_images=10",
        "eval.mmd_images=50", "eval.frechet_images=200", "eval.label_samples=5", "trainer.num_threads=1"]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) for every line of every shell block in README.md and docs/*.md, continuations
    joined and trailing comments dropped."""
    out = []
    for path in DOCS:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line and not line.startswith("#"):
                    out.append((path.name, line))
    return out


def concrete(line: str, runs: dict[str, str]) -> str:
    """The documented placeholders (outputs/DATE/TIME, run=..., path/to/checkpoint.pt, faces.npz) made real."""
    for pattern, real in ((r"outputs/multirun/(DATE/TIME|\d{4}-\d\d-\d\d(/[\d-]+)?)", runs["sweep"]),
                          (r"outputs/(DATE/TIME|\d{4}-\d\d-\d\d/[\d-]+)", runs["run"]), (r"other/run", runs["run"]),
                          (r"path/to/checkpoint\.pt", runs["run"] + "/checkpoints/best.pt"),
                          (r"run=\.\.\.", "run=" + runs["run"])):
        line = re.sub(pattern, real, line)
    return line


def tiny(args: list[str]) -> list[str]:
    """The tiny overrides for a train command: its own values win nowhere they would make it slow."""
    if "--help" in args or "--cfg" in args:
        return []
    net = next((a.split("=")[1] for a in args if a.startswith("net=")), "mlp")
    extra = [*TINY, "net.channels=[4,8]" if net == "conv" else "net.hidden=[16]"]
    if any(a.startswith("hparams_search=") for a in args):
        extra += ["hydra.sweeper.n_trials=2"]
    return extra


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, data_root):
    """A folder with a finished run and a finished sweep where the docs' placeholders point, and faces.npz."""
    import numpy as np

    from aecli.cli import main

    root = tmp_path_factory.mktemp("docs")  # the runs the placeholders point at, evaluated (aecli runs shows them)
    os.environ["AECLI_DATA_ROOT"] = str(data_root)
    np.savez(root / "faces.npz", x=np.random.default_rng(0).random((300, 1, 16, 16)).astype(np.float32))
    runs = {"run": "outputs/2026-01-01/00-00-00-000000", "sweep": "outputs/multirun/2026-01-01/00-00-00-000000"}
    cwd = os.getcwd()
    os.chdir(root)
    try:
        evaluated = [*TINY, "eval.at_end=true", "net.hidden=[16]"]
        for args in (["train", *evaluated, f"hydra.run.dir={runs['run']}"],
                     ["train", "-m", "model=ae,vae", *evaluated, f"hydra.sweep.dir={runs['sweep']}"]):
            with _quiet():
                main(args)
    finally:
        os.chdir(cwd)
    return root, runs


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is SystemExit and value.code in (0, None)


@pytest.mark.slow
def test_every_documented_command_runs(workspace, monkeypatch, capsys):
    import shlex

    import torch

    from aecli.cli import main
    from aecli.preflight import check_overrides
    from aecli.paths import config_dir

    root, runs = workspace
    monkeypatch.chdir(root)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(root / "wandb-home"))
    failures, ran = [], 0
    for where, line in documented_commands():
        if any(line.startswith(prefix) for prefix in NOT_RUN):
            continue
        argv = shlex.split(concrete(line, runs))
        argv = argv[2:] if argv[:2] == ["uv", "run"] else argv
        if argv[0] != "aecli":  # another tool the docs show (mlflow, wandb): it must exist and exit 0
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
            proc = subprocess.run(["bash", "-c", concrete(line, runs).removeprefix("uv run ")], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=120)  # a shell: the line's globs expand
            if proc.returncode != 0:
                failures.append(f"{where}: {line} -> {proc.returncode}: {proc.stderr.strip()[-300:]}")
            continue
        args = argv[1:]
        if args and args[0] == "train":
            cluster = any("submitit_slurm" in a for a in args) or ("device=cuda" in args and not torch.cuda.is_available())
            if cluster:  # what runs elsewhere is checked where it is composed: every key and group resolves
                try:
                    check_overrides(args[1:], config_dir())
                except SystemExit:
                    failures.append(f"{where}: {line} does not compose: {capsys.readouterr().err.strip()}")
                continue
            args = [*args, *tiny(args)]
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        err = capsys.readouterr().err
        ran += 1
        if code != 0 or "Traceback" in err:
            failures.append(f"{where}: {line} -> exit {code}: {err.strip()[-400:]}")
    assert not failures, "\n".join(failures)
    assert ran >= 35  # the docs' aecli commands, all of them


@pytest.mark.real_data
def test_the_readme_says_what_the_mean_image_scores(data_root):
    """The number every run's first line prints (the training split's mean image, scored as a reconstruction)."""
    import torch

    from aecli.datasets.mnist import MNIST
    from aecli.models.base import bernoulli_nll_of_probs

    data = MNIST(root=str(data_root), download=False).load(torch.device("cpu"))
    said = re.search(r"training split's mean image: ([\d.]+) nats on MNIST's validation images, ([\d.]+) on its test",
                     README)
    assert said, "the README no longer says what the mean image scores"
    mean = data.train.mean_image()
    for split, number in ((data.val, said.group(1)), (data.test, said.group(2))):
        x = split.batch(torch.arange(len(split)))[0]
        assert bernoulli_nll_of_probs(mean.expand_as(x), x).mean().item() == pytest.approx(float(number), abs=0.05)
