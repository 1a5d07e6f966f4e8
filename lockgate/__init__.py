"""Lockgate: gated release pipelines for LLMs. The library: pure logic and adapters, no Prefect."""

__version__ = "0.1.0"
