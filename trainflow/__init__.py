"""trainflow: TensorFlow/Keras training orchestrated by Prefect that never loses work."""

__version__ = "0.1.0"
