"""The run's summary as a Prefect markdown artifact, its pictures in it.

The pictures are embedded as data URIs of downscaled PNGs: the Prefect UI renders markdown images,
and a data URI needs no server to fetch it from (the report's files may be in an object store the
browser cannot read, or on a machine it cannot reach), works offline, and lives as long as the
artifact."""

from __future__ import annotations

import base64

from prefect.artifacts import create_markdown_artifact

from trainflow.config import RunConfig
from trainflow.orchestration.artifact_keys import summary_key
from trainflow.paths import ArtifactPaths, RunPaths
from trainflow.reports.thumbnails import thumbnail_png
from trainflow.results import RunSummary


def summary_markdown(
    config: RunConfig,
    summary: RunSummary,
    extra: str = "",
    pictures: dict[str, bytes] | None = None,
) -> str:
    """The run summary shown in the Prefect UI: metrics, data, resume events, the `pictures`
    (title: PNG), parameters."""
    shown = "".join(
        f"\n### {title}\n\n![{title}](data:image/png;base64,{base64.b64encode(png).decode()})\n"
        for title, png in (pictures or {}).items()
    )
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
{extra}{shown}
## Parameters

| parameter | value |
| --- | --- |
{parameters}
"""


def publish_summary(config: RunConfig, summary: RunSummary, extra: str = "") -> None:
    """Publish (a new version of) the run's markdown summary artifact, with its report's pictures;
    call inside a flow run."""
    paths = ArtifactPaths.at(config.artifacts).run(summary.run_name)
    create_markdown_artifact(
        key=summary_key(summary.run_name),
        markdown=summary_markdown(config, summary, extra, report_pictures(paths)),
        description=f"Summary of trainflow run {summary.run_name}",
    )


def _listed(names: list[str], most: int = 50) -> str:
    shown = ", ".join(f"`{name}`" for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _read(data_input: str) -> str:
    return "in memory" if data_input == "memory" else "streamed from disk"


def report_pictures(paths: RunPaths) -> dict[str, bytes]:
    """The run's report pictures that exist, downscaled for the UI, by title."""
    pictures = {}
    for title, path in (
        ("Learning curves", paths.learning_curves_image),
        ("Confusion matrix", paths.confusion_image),
        ("Most confident mistakes", paths.mistakes_image),
    ):
        local = paths.storage.local_copy(path)
        if local.is_file():
            pictures[title] = thumbnail_png(local.read_bytes())
    return pictures
