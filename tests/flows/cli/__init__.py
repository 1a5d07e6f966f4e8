"""Tests of the ``lockgate`` command line package, ``flows/cli/``."""
