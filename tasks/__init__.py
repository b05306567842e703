"""The pipeline's stages: each module holds a plain typed function and its thin Prefect task."""

from trainflow.environment import configure_environment

# Here, before any stage imports TensorFlow, and whoever loads the flow: our CLI, a deployment's
# worker, or `prefect flow-run retry --entrypoint`, which loads flows/training.py as a file.
configure_environment()
