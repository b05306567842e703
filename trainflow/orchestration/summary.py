"""The run's summary as a Prefect markdown artifact."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from trainflow.config import RunConfig
from trainflow.orchestration.artifact_keys import summary_key
from trainflow.results import RunSummary


def summary_markdown(config: RunConfig, summary: RunSummary, extra: str = "") -> str:
    """The run summary shown in the Prefect UI: parameters, data, resume events, metrics."""
    resumed = (
        "never interrupted"
        if summary.resumed_from is None
        else f"resumed after {summary.resumed_from} epochs (global step {summary.resumed_from_step})"
    )
    parameters = "\n".join(
        f"| `{name}` | `{value}` |" for name, value in config.model_dump(mode="json").items()
    )
    return f"""# trainflow run `{summary.run_name}`

| metric | value |
| --- | --- |
| test accuracy | {summary.test_accuracy:.4f} |
| test loss | {summary.test_loss:.4f} |
| macro F1 | {summary.macro_f1:.4f} |
| epochs completed | {summary.epochs_completed} (best: {summary.best_epoch}, stopped early: {summary.stopped_early}) |
| resume | {resumed} |
| data | `{config.dataset}` (prepared data `{summary.data_fingerprint}`, read {_read(summary.data_input)}) |
| classes | {len(summary.class_names)}: {_listed(summary.class_names)} |
| model | `{summary.model}`, saved as `{summary.model_path}`; fed {summary.pixels} pixels |
| pictures | `{summary.reports_dir}`: learning_curves.png, confusion_matrix.png, confident_mistakes.png |
{extra}
## Parameters

| parameter | value |
| --- | --- |
{parameters}
"""


def publish_summary(config: RunConfig, summary: RunSummary, extra: str = "") -> None:
    """Publish (a new version of) the run's markdown summary artifact; call inside a flow run."""
    create_markdown_artifact(
        key=summary_key(summary.run_name),
        markdown=summary_markdown(config, summary, extra),
        description=f"Summary of trainflow run {summary.run_name}",
    )


def _listed(names: list[str], most: int = 50) -> str:
    shown = ", ".join(f"`{name}`" for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _read(data_input: str) -> str:
    return "in memory" if data_input == "memory" else "streamed from disk"
