"""Prefect tasks: thin wrappers over ``lockgate`` that add retries, caching, logs and artifacts.

A task takes a ``lockgate.workspace.Workspace`` (where the state lives) and keyword-only inputs;
the rules it applies live in ``lockgate``. May import Prefect and ``lockgate``; never ``flows``.
"""
