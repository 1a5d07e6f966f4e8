"""Lockgate: gated release pipelines for LLMs. The library: pure logic and adapters, no Prefect.

Stages are one module each (``prep``, ``finetune``, ``quantize``, ``refresh``, ``evaluate``,
``drift``, ``gates``); each outside system is a small package with its Protocol in ``__init__``
(``artifacts``, ``registry``, ``stores``, ``tracking``, ``launchers``); ``settings`` describes,
``workspace`` opens what the settings describe. May import third-party libraries; never
Prefect, ``tasks`` or ``flows`` (tests/test_project.py checks).
"""

__version__ = "0.1.0"
