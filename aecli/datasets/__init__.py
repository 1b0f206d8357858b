"""Data sets: one file each, with its yaml in conf/data/ (aecli/data.py says what a data set hands the trainer)."""
