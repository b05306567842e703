"""Prefect flows: they wire the stages in `tasks/` and hold no logic of their own."""

from trainflow.environment import configure_environment

# Here, not in a command: a deployment's worker imports the flow module without our CLI.
configure_environment()
