"""Reading what trainflow logged to an MLflow tracking server, for the tests of tracking."""

from __future__ import annotations

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def runs_named(client, experiment: str, run_name: str) -> list:
    """The MLflow runs of `experiment` tagged with trainflow's run name `run_name`."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs(
        [found.experiment_id], filter_string=f"tags.`trainflow.run_name` = '{run_name}'"
    )


def history_of(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """The metric `key` of the run, as (step, value) points in step order."""
    return sorted((point.step, point.value) for point in client.get_metric_history(run_id, key))
