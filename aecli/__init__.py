"""aecli: a command-line experiment runner for autoencoders."""

__version__ = "0.1.0"
