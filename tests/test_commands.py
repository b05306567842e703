"""The `trainflow` commands besides `run`, as a user runs them, each in its own process against the
session's Prefect server: `demo-crash`, the model registry's `models`, `promote` and `rollback`,
`evaluate`, and `stack up` / `stack down`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.demo import DemoReport, format_report
from app.stack.lifecycle import stack_down
from app.stack.prefect_server import free_port, is_healthy
from tests.conftest import REPO_ROOT, TRAINFLOW, synthetic_images, write_idx_pair
from tests.test_cli import CLI_TIMEOUT, trainflow
from tests.test_cli_errors import (
    CHECKPOINT_EVERY,
    EXIT_USER_ERROR,
    KILL_AT_STEP,
    LAST_CHECKPOINT,
    assert_one_line_error,
)


def test_demo_crash_verify_kills_resumes_and_finds_the_weights_identical(
    idx_dir, artifacts, server_environment
):
    """Two epochs of idx_dir's 9 steps, killed right after step 13, one step past step 12's
    checkpoint."""
    completed = trainflow(
        "demo-crash",
        "--dataset",
        f"idx:{idx_dir}",
        "--epochs",
        "2",
        "--checkpoint-every",
        CHECKPOINT_EVERY,
        "--kill-at-step",
        KILL_AT_STEP,
        "--run-name",
        "demo",
        "--artifacts",
        artifacts,
        "--verify",
        env=server_environment,
    )
    seconds = r"-?\d+\.\d s"
    expected = [
        re.escape("Failure-recovery demo, run demo:"),
        re.escape(
            "  killed:        SIGKILL right after global step 13 of 18 (epoch 2, step 4 of 9), "
        )
        + f"{seconds} after start",
        re.escape(f"  resumed from:  checkpoint step-{LAST_CHECKPOINT:09d} (epoch 2, step 3 of 9)"),
        re.escape(
            "  steps redone:  0 checkpointed steps (1 steps after the last checkpoint were trained "
            "again)"
        ),
        (
            rf"  time lost:     {seconds} \(killed {seconds} \+ resumed {seconds}, uninterrupted "
            rf"{seconds}\)"
        ),
        r"  test accuracy: (\d\.\d{4}) \(uninterrupted run: \1\)",
        re.escape("Final weights are identical to the uninterrupted run's (bitwise)."),
    ]
    lines = completed.stdout.splitlines()
    assert len(lines) == len(expected), completed.stdout
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), line
    runs = json.loads(
        trainflow("runs", "--artifacts", artifacts, "--json", env=server_environment).stdout
    )
    assert {(run["run_name"], run["status"], run["resumed_from"]) for run in runs} == {
        ("demo", "completed", 1),
        ("demo-uninterrupted", "completed", None),
    }


# The numbers of the report README's failure-recovery demo shows.
README_DEMO_REPORT = DemoReport(
    run_name="demo-crash-20261123-200019",
    total_steps=657,
    steps_per_epoch=219,
    kill_step=403,
    last_checkpoint_step=400,
    resumed_from_step=400,
    checkpointed_steps_redone=0,
    steps_trained_again=3,
    killed_seconds=5.86,
    resumed_seconds=6.77,
    test_accuracy=0.9485,
    uninterrupted_seconds=8.84,
    uninterrupted_test_accuracy=0.9485,
    differing_arrays=[],
)


def test_the_demo_report_is_the_one_readme_shows():
    readme = (REPO_ROOT / "README.md").read_text()
    shown = readme.split("It ends with a report like:\n\n```\n", 1)[1].split("\n```", 1)[0]
    assert format_report(README_DEMO_REPORT) == shown


@pytest.mark.parametrize(
    ("update", "last_line", "status"),
    [
        ({}, "Final weights are identical to the uninterrupted run's (bitwise).", 0),
        (
            {"differing_arrays": ["mlp/dense/kernel", "mlp/dense/bias"]},
            "Final weights DIFFER from the uninterrupted run's: mlp/dense/kernel, mlp/dense/bias",
            1,
        ),
        (  # without --verify: no uninterrupted run, no verdict
            {
                "uninterrupted_seconds": None,
                "uninterrupted_test_accuracy": None,
                "differing_arrays": None,
            },
            "  test accuracy: 0.9485",
            0,
        ),
    ],
    ids=["identical", "different", "not-verified"],
)
def test_demo_crash_exit_status_follows_the_verdict(
    update, last_line, status, monkeypatch, capsys, idx_dir, artifacts
):
    """The command's exit status and last line for each outcome of the demo (run in-process, with
    the demo's runs replaced by the outcome: differing weights cannot be caused on purpose)."""
    from app import cli, demo

    report = README_DEMO_REPORT.model_copy(update=update)
    monkeypatch.setattr(demo, "demo_crash", lambda config, verify: report)
    arguments = ["demo-crash", "--dataset", f"idx:{idx_dir}", "--artifacts", str(artifacts)]
    assert cli.main([*arguments, "--verify"]) == status
    assert capsys.readouterr().out.splitlines()[-1] == last_line


# The nightly-retrain deployment runs this flow; here it runs in a process of its own against the
# session's server, without a stack (tests/test_deployments.py drives the deployment itself).
@dataclass
class RetrainedModels:
    """Two retraining runs under `artifacts`: `original` on `datasets["original"]`, then
    `relabelled` on data where every label is moved on by one, so that the first model is wrong
    about almost all of it; `decisions` holds each run's promotion decision."""

    artifacts: Path
    datasets: dict[str, Path]
    decisions: dict[str, dict]

    def run_dir(self, name: str) -> Path:
        return self.artifacts / "runs" / name


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, prefect_home, prefect_server) -> RetrainedModels:
    """The module's two retraining runs, `trainflow retrain` reporting to the session's Prefect
    server."""
    root = tmp_path_factory.mktemp("retrained")
    images, labels = synthetic_images(400, seed=5)
    datasets = {"original": root / "original", "relabelled": root / "relabelled"}
    write_idx_pair(datasets["original"], "t10k", *synthetic_images(400, seed=1))
    write_idx_pair(datasets["relabelled"], "t10k", images, (labels + 1) % 10)
    models = RetrainedModels(root / "artifacts", datasets, {})
    environment = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home / "cli"),
        "PREFECT_API_URL": prefect_server,
    }
    for name, dataset in datasets.items():
        completed = trainflow(
            "retrain",
            "--dataset",
            f"idx:{dataset}",
            "--epochs",
            "2",
            "--run-name",
            name,
            "--artifacts",
            models.artifacts,
            "--tolerance",
            "0",
            "--json",
            env=environment,
        )
        models.decisions[name] = json.loads(completed.stdout)
    return models


def test_promotion_across_datasets_judges_the_champion_on_the_challengers_test_data(retrained):
    """The champion's recorded accuracy is on its own test data; against a challenger trained on
    other data it is measured again, on the challenger's test split."""
    from trainflow.contract import ModelContract
    from trainflow.paths import ArtifactPaths
    from trainflow.runs.registry import Registry
    from trainflow.training.scoring import accuracy_on

    registry = Registry(ArtifactPaths.at(retrained.artifacts))
    champion, challenger = registry.version("original"), registry.version("relabelled")
    assert champion.data_fingerprint != challenger.data_fingerprint
    challengers_data = ArtifactPaths.at(retrained.artifacts).data(challenger.data_fingerprint)
    on_challengers_data = accuracy_on(champion.model_path, challengers_data, ModelContract())
    assert on_challengers_data < champion.test_accuracy - 0.5  # the two measures are far apart
    decision = retrained.decisions["relabelled"]
    assert decision["champion_run"] == "original"
    assert decision["champion_accuracy"] == on_challengers_data
    assert decision["promoted"] and challenger.decision == "promoted"
    assert f"champion original's {on_challengers_data:.4f} - tolerance 0.0" in challenger.reason
    assert registry.champion().run_name == "relabelled"


@pytest.fixture
def registry_copy(retrained, tmp_path) -> Path:
    """An artifacts directory holding a copy of the retrained models' registry, to change."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(retrained.artifacts / "registry", artifacts / "registry")
    return artifacts


def test_models_lists_the_versions_and_marks_the_champion(registry_copy, cli_environment):
    listed = trainflow("models", "--artifacts", registry_copy, env=cli_environment).stdout
    where, header, *rows = listed.splitlines()
    assert where == f"Models registered under {registry_copy.resolve()}:"
    columns = ["RUN", "STATUS", "TEST", "ACCURACY", "DATA", "CODE", "REGISTERED", "REASON"]
    assert header.split() == columns
    versions = json.loads((registry_copy / "registry" / "versions.json").read_text())
    assert [row.split()[:3] for row in rows] == [
        ["original", "promoted", f"{versions[0]['test_accuracy']:.4f}"],
        ["relabelled", "champion", f"{versions[1]['test_accuracy']:.4f}"],
    ]
    assert rows[0].endswith("first model: no champion yet")
    assert rows[1].endswith(versions[1]["reason"])


def test_promote_and_rollback_move_the_champion_and_keep_the_versions(
    registry_copy, cli_environment
):
    registry = registry_copy / "registry"
    versions = (registry / "versions.json").read_bytes()

    def champion() -> str:
        return json.loads((registry / "champion.json").read_text())["run_name"]

    for command, expected in (
        (["promote", "original"], "original"),
        (["rollback"], "relabelled"),
        (["rollback"], "original"),
    ):
        completed = trainflow(*command, "--artifacts", registry_copy, env=cli_environment)
        assert completed.stdout == f"Champion: {expected}\n"
        assert champion() == expected
    pointer = (registry / "champion.json").read_bytes()
    completed = trainflow(
        "rollback", "--artifacts", registry_copy, env=cli_environment, check_status=EXIT_USER_ERROR
    )
    assert_one_line_error(
        completed,
        f"there is no earlier champion to roll back to in {registry / 'champion.json'}",
    )
    assert (registry / "champion.json").read_bytes() == pointer
    assert (registry / "versions.json").read_bytes() == versions


def test_promoting_an_unknown_run_is_one_line_and_changes_nothing(registry_copy, cli_environment):
    registry = registry_copy / "registry"
    pointer = (registry / "champion.json").read_bytes()
    completed = trainflow(
        "promote",
        "nowhere",
        "--artifacts",
        registry_copy,
        env=cli_environment,
        check_status=EXIT_USER_ERROR,
    )
    line = assert_one_line_error(
        completed, f"run 'nowhere' is not in the model registry {registry / 'versions.json'}"
    )
    assert line.endswith("`trainflow models` lists the registered runs")
    assert (registry / "champion.json").read_bytes() == pointer


def evaluate_line(run_dir: Path, evaluation: dict) -> str:
    """What `trainflow evaluate` prints for `evaluation` (the content of evaluation.json)."""
    return (
        f"Test accuracy {evaluation['accuracy']:.4f}, loss {evaluation['loss']:.4f}, macro F1 "
        f"{evaluation['report']['macro_f1']:.4f} on {evaluation['num_examples']} examples; "
        f"report in {run_dir / 'reports'}\n"
    )


def modification_times(run_dir: Path) -> dict[str, int]:
    """The modification times of the run's evaluation and report files, by name."""
    files = [run_dir / "evaluation.json", *(run_dir / "reports").iterdir()]
    return {path.name: path.stat().st_mtime_ns for path in files}


def test_evaluate_on_another_dataset_rewrites_the_evaluation_and_report(
    retrained, server_environment
):
    run_dir = retrained.run_dir("original")
    before = modification_times(run_dir)
    completed = trainflow(
        "evaluate",
        run_dir,
        "--dataset",
        f"idx:{retrained.datasets['relabelled']}",
        env=server_environment,
    )
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert completed.stdout == evaluate_line(run_dir, evaluation)
    assert evaluation["num_examples"] == 80  # the relabelled data's test split: 20% of 400
    assert evaluation["accuracy"] < 0.5  # its labels are not the ones the model learnt
    after = modification_times(run_dir)
    assert after.keys() == before.keys()
    assert all(after[name] > before[name] for name in before)


def test_evaluate_on_its_own_data_evaluates_again(retrained, server_environment):
    run_dir = retrained.run_dir("relabelled")
    before = modification_times(run_dir)
    completed = trainflow("evaluate", run_dir, env=server_environment)
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert completed.stdout == evaluate_line(run_dir, evaluation)
    after = modification_times(run_dir)
    assert all(after[name] > before[name] for name in before)


def live_members(process_group: int) -> list[int]:
    """The processes of `process_group` that have not exited (zombies have)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the command name, which is in parentheses: state, ppid, pgrp, ...
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(group) == process_group and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_stack_up_and_down_start_and_stop_exactly_their_processes(tmp_path, cli_environment):
    """`trainflow stack up` and `down` as a user runs them from the repository root, with an
    unrelated process (in a session of its own, as the stack's processes are) looking on."""
    home, port = tmp_path / "stack-home", free_port()
    api_url = f"http://127.0.0.1:{port}/api"

    def stack(action: str, check_status: int = 0) -> subprocess.CompletedProcess:
        completed = subprocess.run(
            [TRAINFLOW, "stack", action, "--port", str(port), "--home", str(home)],
            check=False,
            cwd=REPO_ROOT,
            env=cli_environment,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert completed.returncode == check_status, completed.stdout + completed.stderr[-3000:]
        return completed

    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        up = stack("up")
        recorded = json.loads((home / "stack.json").read_text())
        assert recorded["api_url"] == api_url
        assert up.stdout.splitlines() == [
            (
                f"Prefect server {api_url} (UI: http://127.0.0.1:{port}), worker pid "
                f"{recorded['worker_pid']}. Point prefect commands at it with:"
            ),
            f"  export PREFECT_API_URL={api_url}",
        ]
        assert is_healthy(api_url)
        with urllib.request.urlopen(f"{api_url}/deployments/name/trainflow/train") as response:
            assert json.load(response)["work_pool_name"] == "trainflow-local"
        groups = (recorded["server_pid"], recorded["worker_pid"])
        assert all(live_members(group) for group in groups)

        down = stack("down")
        assert down.stdout == (
            f"Stopped the worker (pid {recorded['worker_pid']}) and the server "
            f"(pid {recorded['server_pid']})\n"
        )
        assert not any(live_members(group) for group in groups)
        assert not is_healthy(api_url)
        assert not (home / "stack.json").exists()
        assert bystander.poll() is None

        again = stack("down", check_status=EXIT_USER_ERROR)
        line = assert_one_line_error(again, f"no stack is running from {home}")
        assert line.endswith(f"(no {home / 'stack.json'})")
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()
        if (home / "stack.json").exists():  # a failed check must not leave the stack running
            stack_down(home)
