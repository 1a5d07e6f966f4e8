"""Prefect flows: wiring only. Which tasks run, in what order, on what inputs.

Each flow reads its settings and opens one ``Workspace`` at its start, then hands both to tasks.
``cli/`` is the ``lockgate`` command. May import Prefect, ``tasks`` and ``lockgate``.
"""
