"""The live Prefect server fixtures (``server``, ``postgres``) come from tests/conftest.py."""
