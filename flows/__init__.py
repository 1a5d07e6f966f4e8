"""Prefect flows: wiring only. Which tasks run, in what order, on what inputs."""
