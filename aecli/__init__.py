"""aecli: a command-line experiment runner for autoencoders.

From Python (aecli/api.py): `aecli.train(overrides)` runs what `aecli train` runs and returns the run folder;
`aecli.load_run(path)` gives a finished run's model, config, metrics and data set in a notebook. Both are imported
on first use, so `import aecli` (and the CLI) stays light.

`aecli.train` is also the name of the training loop's module: importing it (as the first `aecli.train(...)` does)
makes Python set the package's attribute `train` to that module. The module is made callable as the API's `train`,
so `aecli.train(...)` works any number of times and `import aecli.train as loop` still gives the module.
"""

import sys
import types

__version__ = "0.1.0"
__all__ = ["load_run", "train", "Run"]


def __getattr__(name: str):
    if name in __all__:
        from aecli import api

        return getattr(api, name)
    raise AttributeError(f"module 'aecli' has no attribute {name!r}")


class _TrainModule(types.ModuleType):
    """aecli/train.py, callable as the Python API's `aecli.train(overrides, run_dir=None)`."""

    def __call__(self, *args, **kwargs):
        from aecli.api import train

        return train(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name == "train" and type(value) is types.ModuleType:  # the submodule, set by the import system
            value.__class__ = _TrainModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
