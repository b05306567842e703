"""Experiment tracking in MLflow: one MLflow run per trainflow run, continued by every attempt on
any machine, with each epoch logged exactly once.

Only this room imports MLflow, and only its modules that talk to the server do (`identity` does
not): the stages import those inside their functions, when a run is tracked, so that a run without
a tracking URI never imports MLflow.
"""
