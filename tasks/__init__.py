"""The pipeline's stages: each module holds a plain typed function and its thin Prefect task."""
