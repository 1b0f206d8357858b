"""aecli's Optuna sweeper for Hydra (hparams_search=optuna): ask-and-tell on current Optuna, pruning by epoch,
and several workers on one study. Hydra finds it in the hydra_plugins namespace package."""
