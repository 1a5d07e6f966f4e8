"""Prefect tasks: thin wrappers over ``lockgate`` that add retries, caching, logs and artifacts."""
