"""aecli: a command-line experiment runner for autoencoders.

From Python (aecli/api.py): `aecli.train(overrides)` runs what `aecli train` runs and returns the run folder;
`aecli.load_run(path)` gives a finished run's model, config, metrics and data set in a notebook. Both are imported
on first use, so `import aecli` (and the CLI) stays light. The training loop's module is aecli/loop.py.
"""

__version__ = "0.1.0"
__all__ = ["load_run", "train", "Run"]


def __getattr__(name: str):
    if name in __all__:
        from aecli import api

        return getattr(api, name)
    raise AttributeError(f"module 'aecli' has no attribute {name!r}")
