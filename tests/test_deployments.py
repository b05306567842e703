"""The deployments on a real local stack: `prefect server start`, process workers, the work pool
and the deployments of deployments/prefect.yaml, driven as a user drives them.

Every test runs on two stacks: the default (SQLite, one worker) and `--postgres --workers 2` (a
local PostgreSQL cluster, two workers sharing the pool)."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.client.schemas.sorting import ArtifactSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from app.stack.lifecycle import Stack, read_stack
from app.stack.prefect_server import PREFECT_COMMAND, free_port
from app.stack.processes import is_alive
from examples.datasets import write_rgb_image_folder
from tests.browser import CHROMIUM, rendered_page
from tests.conftest import (
    REPO_ROOT,
    STEPS_PER_EPOCH,
    TRAINFLOW,
    needs_postgres,
    postgres_binaries_found,
    synthetic_images,
    write_idx_pair,
)
from trainflow.orchestration.artifact_keys import summary_key

RUN_TIMEOUT = 300
HEARTBEAT_SECONDS = 30
SILENCE_SECONDS = 90  # deployments/automations.yaml
# A worker that asks for work every second and a scheduler that looks every 2 s keep tests short.
FAST_POLLING = {
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
}


STACKS = {
    "sqlite": [],
    # With an MLflow tracking server too, which the workers' runs log to.
    "postgres": ["--postgres", "--workers", "2", "--mlflow"],
}


@dataclass(frozen=True)
class RunningStack:
    """A stack under test: its home and what its stack.json records."""

    home: Path
    record: Stack

    @property
    def api_url(self) -> str:
        return self.record.api_url


BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=needs_postgres)]


def in_ci_on(backend: str) -> pytest.MarkDecorator:
    """Run the test on `backend`'s stack in CI, and on the other one too under `-m slow`: what
    it proves does not depend on the database, and each stack costs minutes of CI."""
    return pytest.mark.parametrize(
        "stack",
        [
            pytest.param(*param.values, marks=[*param.marks, pytest.mark.slow])
            if param.values[0] != backend
            else param
            for param in BACKENDS
        ],
        indirect=True,
    )


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request, tmp_path_factory):
    """`trainflow stack up` on a free port with its own home, run from the repository root as a
    user runs it; `trainflow stack down` afterwards (which must stop PostgreSQL too).

    In processes of their own, not by calling `stack_up` here: the server and the workers outlive
    `up` and are reaped by init when they stop. Children of this process would stay zombies, which
    `stack_down` takes for alive, and it would wait 30 s for each before giving up."""
    home = tmp_path_factory.mktemp(f"stack-home-{request.param}")

    def stack_command(*arguments: str) -> None:
        completed = subprocess.run(
            [TRAINFLOW, "stack", *arguments, "--home", str(home)],
            check=False,
            cwd=REPO_ROOT,
            env={**os.environ, **FAST_POLLING},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]

    stack_command("up", "--port", str(free_port()), *STACKS[request.param])
    record = read_stack(home)
    try:
        yield RunningStack(home, record)
    finally:
        stack_command("down")
    if record.mlflow_pid is not None:
        assert not is_alive(record.mlflow_pid), "stack down left the MLflow server running"
    if record.postgres is not None:
        assert not is_alive(record.postgres.pid), "stack down left PostgreSQL running"
        assert not record.postgres.temporary or not Path(record.postgres.directory).exists()


@pytest.fixture
def client(stack):
    with (
        temporary_settings({PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def deployment_run(stack, name: str, *params: str) -> subprocess.CompletedProcess:
    """`prefect deployment run NAME --param ... --watch`, as the README shows it."""
    arguments = [PREFECT_COMMAND, "deployment", "run", name, "--watch"]
    for param in params:
        arguments += ["--param", param]
    return subprocess.run(
        arguments,
        env={**os.environ, "PREFECT_API_URL": stack.api_url},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def small_config(idx_dir, artifacts, **options) -> str:
    config = {"dataset": f"idx:{idx_dir}", "epochs": 2, "artifacts": str(artifacts), **options}
    return "config=" + json.dumps(config)


def wait_for_state(client, flow_run_id, is_done, timeout=RUN_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.read_flow_run(flow_run_id).state
        if is_done(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} still {state.type} after {timeout} s")


def retry_to_the_end(stack, client, flow_run_id):
    """`prefect flow-run retry ID`, as the README shows it; the retried run's final state."""
    retried = subprocess.run(
        [PREFECT_COMMAND, "flow-run", "retry", str(flow_run_id)],
        check=False,
        env={**os.environ, "PREFECT_API_URL": stack.api_url},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert retried.returncode == 0, retried.stdout + retried.stderr
    return wait_for_state(
        client, flow_run_id, lambda state: state.is_final() and not state.is_crashed()
    )


def wait_for_log(client, flow_run_id, text: str, timeout: float = 60) -> bool:
    """True once a log message of the flow run contains `text`; False after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        if any(text in log.message for log in logs):
            return True
        time.sleep(1)
    return False


@in_ci_on("sqlite")
def test_the_ui_of_a_stack_on_another_port_talks_to_that_port(stack):
    """Prefect's UI asks the server which API to call; on any port but 4200 the answer used to be
    port 4200 (the UI showed "Oops. Something went wrong.")."""
    ui_url = stack.record.ui_url
    assert ui_url == stack.api_url.removesuffix("/api")  # on loopback, the same address
    with urllib.request.urlopen(f"{ui_url}/ui-settings", timeout=30) as response:
        assert json.load(response)["api_url"] == stack.api_url
    with urllib.request.urlopen(ui_url, timeout=30) as response:
        assert "<html" in response.read().decode().lower()


@in_ci_on("sqlite")
def test_a_deployment_run_writes_the_files_and_a_browser_shows_it(
    stack, client, idx_dir, artifacts, tmp_path
):
    """A deployment run trains and writes the run's files; at the link a stack on a non-default
    port records for it, a browser shows the flow run's page with its name, state and logs, and
    the summary artifact with the test accuracy and the three pictures (screenshots in the test's
    directory)."""
    completed = deployment_run(stack, "trainflow/train", small_config(idx_dir, artifacts))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "Flow run finished successfully in 'Completed'" in completed.stdout
    (run_dir,) = (artifacts / "runs").iterdir()
    for name in ("model/model.keras", "model/model.weights.h5", "evaluation.json"):
        assert (run_dir / name).is_file(), name
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    # The stack outlives the run: its UI page is recorded, on the stack's port, and served.
    assert record["flow_run_url"] == f"{stack.record.ui_url}/runs/flow-run/{record['flow_run_id']}"
    page = urllib.request.Request(record["flow_run_url"], headers={"Accept": "text/html"})
    with urllib.request.urlopen(page, timeout=30) as response:  # as a browser asks for it
        assert response.status == 200 and b"<html" in response.read().lower()
    if CHROMIUM is None:
        pytest.skip("needs chromium to render the pages (`apt-get install chromium`)")
    flow_run = client.read_flow_run(record["flow_run_id"])
    rendered_page(
        record["flow_run_url"],
        lambda dom: flow_run.name in dom and "Completed" in dom and "Test accuracy" in dom,
        tmp_path / "flow-run.png",
    )
    (summary,) = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[summary_key(run_dir.name)])),
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
    )
    rendered_page(
        f"{stack.record.ui_url}/artifacts/artifact/{summary.id}",
        lambda dom: "test accuracy" in dom and dom.count('src="data:image/png;base64,') == 3,
        tmp_path / "summary-artifact.png",
    )


@in_ci_on("sqlite")
def test_a_deployment_run_trains_your_model_on_your_image_folder(stack, tmp_path, artifacts):
    """The worker imports the builder from the project directory, as `trainflow run` does."""
    folder = write_rgb_image_folder(tmp_path / "colours", per_class=20)
    config = {
        "model": "examples.small_convnet:build_model",
        "dataset": f"images:{folder}",
        "epochs": 2,
        "artifacts": str(artifacts),
    }
    completed = deployment_run(stack, "trainflow/train", "config=" + json.dumps(config))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (run_dir,) = (artifacts / "runs").iterdir()
    training = json.loads((run_dir / "training.json").read_text())
    assert training["recipe"]["model"] == "examples.small_convnet:build_model"
    assert training["image_shape"] == [12, 12, 3]
    assert training["class_names"] == ["blue", "green", "red"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


@in_ci_on("postgres")
def test_two_retraining_runs_are_registered_and_judged(stack, idx_dir, artifacts, cli_environment):
    for epochs in (2, 1):
        completed = deployment_run(
            stack,
            "trainflow-retrain/nightly-retrain",
            small_config(idx_dir, artifacts, epochs=epochs),
            "tolerance=0.0",
        )
        assert completed.returncode == 0, completed.stdout[-3000:]
    versions = json.loads((artifacts / "registry" / "versions.json").read_text())
    first, second = versions
    assert first["decision"] == "promoted" and first["reason"] == "first model: no champion yet"
    expected = "promoted" if second["test_accuracy"] >= first["test_accuracy"] else "rejected"
    assert second["decision"] == expected
    champion = json.loads((artifacts / "registry" / "champion.json").read_text())
    assert champion["run_name"] == (second if expected == "promoted" else first)["run_name"]
    assert second["parameters"]["epochs"] == 1 and second["code_version"]
    listed = subprocess.run(
        [TRAINFLOW, "models", "--artifacts", str(artifacts)],
        env=cli_environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for version in versions:
        assert version["run_name"] in listed
    assert "champion" in listed
    _check_the_registry_is_mirrored_in_mlflow(stack, artifacts, cli_environment, first, second)


def _check_the_registry_is_mirrored_in_mlflow(stack, artifacts, environment, first, second):
    """The stack's MLflow server (`stack up --mlflow`), which the workers' runs logged to: each
    challenger a version of the registered model, its alias `champion` on the champion's version
    only; `trainflow promote` and `rollback` move it too."""
    if stack.record.mlflow_url is None:
        return  # the SQLite stack (`-m slow`) runs without MLflow
    from trainflow.tracking.connection import client_for

    client = client_for(stack.record.mlflow_url)
    registered = {
        version.tags["trainflow.run_name"]: version.version
        for version in client.search_model_versions("name = 'trainflow'")
    }
    assert set(registered) == {first["run_name"], second["run_name"]}
    if stack.record.postgres is not None:
        _check_mlflow_keeps_its_runs_in_the_stack_postgres(stack, set(registered.values()))

    def champion_version() -> str:
        return client.get_model_version_by_alias("trainflow", "champion").version

    champion = json.loads((artifacts / "registry" / "champion.json").read_text())["run_name"]
    assert champion_version() == registered[champion]  # moved by a promotion, not a rejection
    other = first["run_name"] if champion == second["run_name"] else second["run_name"]
    tracked_shell = {**environment, "MLFLOW_TRACKING_URI": stack.record.mlflow_url}
    for command, now_champion in (("promote", other), ("rollback", champion)):
        arguments = [command, *([other] if command == "promote" else [])]
        completed = subprocess.run(
            [TRAINFLOW, *arguments, "--artifacts", str(artifacts)],
            env=tracked_shell,
            capture_output=True,
            text=True,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert champion_version() == registered[now_champion], command


def _check_mlflow_keeps_its_runs_in_the_stack_postgres(stack, versions: set[str]) -> None:
    """With `--postgres`, the MLflow server's runs and registry are in the cluster's database
    `mlflow` (read there directly), not in SQLite; stack.json names it without the password."""
    import psycopg2

    from app.stack.postgres import PASSWORD_FILE

    port = stack.record.postgres.port
    assert stack.record.mlflow_database_url == (
        f"postgresql+psycopg2://prefect:***@127.0.0.1:{port}/mlflow"
    )
    assert not (stack.home / "mlflow" / "mlflow.db").exists()
    password = (stack.home / PASSWORD_FILE).read_text().strip()
    connection = psycopg2.connect(
        host="127.0.0.1", port=port, user="prefect", password=password, dbname="mlflow"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version FROM model_versions WHERE name = 'trainflow'")
            assert {str(version) for (version,) in cursor.fetchall()} == versions
    finally:
        connection.close()


@in_ci_on("postgres")
def test_killed_flow_run_is_crashed_then_retried_and_resumes(stack, client, idx_dir, artifacts):
    from prefect.deployments import run_deployment

    parameters = {
        "config": {
            "dataset": f"idx:{idx_dir}",
            "epochs": 3,
            "checkpoint_every": 4,
            "kill_at_step": STEPS_PER_EPOCH + 6,  # epoch 2; last checkpoint at step 12
            "artifacts": str(artifacts),
        }
    }
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        flow_run = run_deployment("trainflow/train", parameters=parameters, timeout=0)
    state = wait_for_state(client, flow_run.id, lambda state: state.is_final())
    assert state.is_crashed(), state

    state = retry_to_the_end(stack, client, flow_run.id)
    assert state.is_completed(), state
    # The run's logs reach the API in batches, possibly after its final state: wait for them.
    assert wait_for_log(
        client,
        flow_run.id,
        "from checkpoint step-000000012.weights.h5: epoch 2, step 3 of the epoch",
    )
    (run_dir,) = (artifacts / "runs").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["resumed_from"] == 1 and record["epochs_completed"] == 3


@in_ci_on("sqlite")
def test_failure_demo_fails_after_its_own_epoch_2_then_the_retry_resumes(
    stack, client, idx_dir, artifacts
):
    """The failure-demo deployment with its own fail_at_epoch (2, from deployments/prefect.yaml):
    the training task fails after epoch 2, Prefect retries it, and the retry resumes from the
    checkpoint of epoch 2's end."""
    deployed = client.read_deployment_by_name("trainflow/failure-demo").parameters["config"]
    assert deployed["fail_at_epoch"] == 2
    # A parameter given to a run replaces the deployment's whole `config`: keep the deployed one,
    # and change only the data, the epochs and where the outputs go.
    config = {**deployed, "dataset": f"idx:{idx_dir}", "epochs": 3, "artifacts": str(artifacts)}
    completed = deployment_run(stack, "trainflow/failure-demo", "config=" + json.dumps(config))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "Flow run finished successfully in 'Completed'" in completed.stdout
    (run_dir,) = (artifacts / "runs").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["resumed_from"] == 2 and record["epochs_completed"] == 3
    flow_run_id = record["flow_run_id"]
    task_runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    (training,) = [run for run in task_runs if run.name.startswith("train_model")]
    assert training.state.is_completed() and training.run_count == 2
    assert wait_for_log(client, flow_run_id, "injected failure after epoch 2 (--fail-at-epoch)")
    assert wait_for_log(
        client,
        flow_run_id,
        f"from checkpoint step-{2 * STEPS_PER_EPOCH:09d}.weights.h5: epoch 3, step 0 of the epoch",
    )


@in_ci_on("postgres")
def test_a_deployment_on_a_short_interval_fires_by_itself(stack, client, idx_dir, artifacts):
    """A 5 s schedule starts a run by itself, which completes. The schedule is removed as soon as
    its first run starts (with the runs it had scheduled): on a busy machine, runs every 5 s pile
    up faster than they finish and lock SQLite up for everything after."""
    deployment = client.read_deployment_by_name("trainflow/failure-demo")
    parameters = {"config": {"dataset": f"idx:{idx_dir}", "epochs": 1, "artifacts": str(artifacts)}}
    (schedule,) = client.create_deployment_schedules(
        deployment.id,
        [(IntervalSchedule(interval=timedelta(seconds=5)), True)],
        parameters=parameters,
    )
    of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        started = []
        while not started:
            assert time.monotonic() < deadline, "no scheduled run started"
            time.sleep(0.5)
            started = [
                flow_run
                for flow_run in client.read_flow_runs(deployment_filter=of_deployment)
                if flow_run.auto_scheduled and not flow_run.state.is_scheduled()
            ]
    finally:
        client.delete_deployment_schedule(deployment.id, schedule.id)
    # Removing the schedule removed its runs still waiting; those already started remain.
    fired = [
        flow_run
        for flow_run in client.read_flow_runs(deployment_filter=of_deployment)
        if flow_run.auto_scheduled
    ]
    assert {flow_run.id for flow_run in started} <= {flow_run.id for flow_run in fired}
    for flow_run in fired:
        state = wait_for_state(client, flow_run.id, lambda state: state.is_final())
        assert state.is_completed(), state
    records = [json.loads(path.read_text()) for path in (artifacts / "runs").glob("*/run.json")]
    assert [record["status"] for record in records] == ["completed"] * len(fired)


def test_a_run_that_vanished_silently_is_marked_crashed_by_heartbeats(
    stack, client, tmp_path, artifacts
):
    """A flow run whose process died unseen (no worker watched it) stays Running until its
    heartbeats stop; the installed automation then marks it Crashed.

    On one stack only (two minutes of waiting for silence): the PostgreSQL one where it runs."""
    if stack.record.postgres is None and postgres_binaries_found():
        pytest.skip("runs on the PostgreSQL stack (the automation is the server's, not SQLite's)")
    source = tmp_path / "idx"
    write_idx_pair(source, "t10k", *synthetic_images(4000, seed=1))
    environment = {
        **os.environ,
        "PREFECT_API_URL": stack.api_url,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    }
    arguments = [
        TRAINFLOW,
        "run",
        "--dataset",
        f"idx:{source}",
        "--epochs",
        "1000",
        "--run-name",
        "silent",
        "--artifacts",
        str(artifacts),
    ]
    process = subprocess.Popen(
        arguments, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    record = artifacts / "runs" / "silent" / "run.json"
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not record.is_file():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.5)
        flow_run_id = json.loads(record.read_text())["flow_run_id"]
        wait_for_first_heartbeat(client, flow_run_id, alive=process)
    finally:
        process.kill()
        process.wait()
    assert client.read_flow_run(flow_run_id).state.is_running()
    killed_at = time.monotonic()
    state = wait_for_state(client, flow_run_id, lambda state: not state.is_running(), timeout=300)
    assert state.is_crashed(), state
    assert time.monotonic() - killed_at < SILENCE_SECONDS + 60


def wait_for_first_heartbeat(client, flow_run_id, alive: subprocess.Popen) -> None:
    """Return once the server has stored a heartbeat event of the flow run (the automation
    watches for silence only after one), failing if the run's process ends first."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    heartbeats = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    deadline = time.monotonic() + RUN_TIMEOUT
    while not client.read_events(filter=heartbeats, limit=1).events:
        assert time.monotonic() < deadline and alive.poll() is None
        time.sleep(0.5)


SUBMITTED = re.compile(r"Worker '([\w-]+)' submitting flow run '([0-9a-f-]+)'")


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """Stop process `pid` (not its flow runs) while the block runs: it polls for no work."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_two_workers_share_four_runs_and_run_each_once(stack, client, tmp_path):
    """Four runs of `trainflow/train` on the stack with two workers: each becomes exactly one flow
    run, which one worker submits once and which completes on its first attempt.

    A worker takes every run waiting when it polls, so which worker takes a run is up to timing;
    pausing one worker while two runs wait makes the other take them, so both are used every time.
    """
    from prefect.deployments import run_deployment

    source = tmp_path / "idx"
    write_idx_pair(source, "t10k", *synthetic_images(400, seed=1))

    def submit(index: int):
        config = {
            "dataset": f"idx:{source}",
            "epochs": 1,
            "artifacts": str(tmp_path / f"artifacts-{index}"),
        }
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            return run_deployment("trainflow/train", parameters={"config": config}, timeout=0)

    first, second = stack.record.worker_pids
    flow_runs = []
    for paused_worker, indices in ((first, (0, 1)), (second, (2, 3))):
        with paused(paused_worker):
            submitted = [submit(index) for index in indices]
            for flow_run in submitted:
                wait_for_state(client, flow_run.id, lambda state: not state.is_scheduled())
        flow_runs += submitted
    for flow_run in flow_runs:
        state = wait_for_state(client, flow_run.id, lambda state: state.is_final())
        assert state.is_completed(), state
        assert client.read_flow_run(flow_run.id).run_count == 1
    for index, flow_run in enumerate(flow_runs):
        (record,) = (tmp_path / f"artifacts-{index}" / "runs").glob("*/run.json")
        assert json.loads(record.read_text())["flow_run_id"] == str(flow_run.id)

    submitters: dict[str, list[str]] = {}
    for log in sorted(stack.home.glob("workers/*/worker.log")):
        for worker, flow_run_id in SUBMITTED.findall(log.read_text()):
            submitters.setdefault(flow_run_id, []).append(worker)
    ours = [submitters.get(str(flow_run.id)) for flow_run in flow_runs]
    first_name, second_name = stack.record.worker_names
    assert ours == [[second_name], [second_name], [first_name], [first_name]], ours


def test_a_run_whose_process_died_resumes_on_the_other_worker_from_the_store(
    stack, client, idx_dir, s3_store, bucket
):
    """Artifacts in a store: a flow run SIGKILLed mid-training on one worker is marked Crashed,
    and, retried while that worker's machine is gone (paused), runs on the other worker, which
    has nothing of the run locally: it takes over the dead run's lease and resumes from the newest
    checkpoint committed to the store."""
    if len(stack.record.worker_pids) < 2:
        pytest.skip("needs the stack with two workers")
    from prefect.deployments import run_deployment

    kill_step = STEPS_PER_EPOCH + 6  # epoch 2; the last checkpoint before it at step 12
    config = {
        "dataset": f"idx:{idx_dir}",
        "epochs": 3,
        "checkpoint_every": 4,
        "kill_at_step": kill_step,
        "artifacts": f"s3://{bucket}/team",
        "run_name": "moved",
    }
    first, second = stack.record.worker_pids
    with paused(second):  # the first worker takes it
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            flow_run = run_deployment(
                "trainflow/train",
                parameters={"config": config},
                job_variables={"env": s3_store.environment},
                timeout=0,
            )
        wait_for_state(client, flow_run.id, lambda state: not state.is_scheduled())
    state = wait_for_state(client, flow_run.id, lambda state: state.is_final())
    assert state.is_crashed(), state

    with paused(first):  # its machine is gone
        state = retry_to_the_end(stack, client, flow_run.id)
    assert state.is_completed(), state
    # The first attempt on the first worker, the retry on the second.
    assert submitting_workers(stack, flow_run.id) == list(stack.record.worker_names)
    assert wait_for_log(
        client,
        flow_run.id,
        "Resuming run moved from checkpoint step-000000012.weights.h5: epoch 2, step 3 of the epoch",
    )
    # The killed process ran on this host: its lease is taken over at once, not after expiry.
    assert wait_for_log(client, flow_run.id, "whose process is gone")
    record = json.loads(
        s3_store.client().get_object(Bucket=bucket, Key="team/runs/moved/run.json")["Body"].read()
    )
    assert record["status"] == "completed" and record["resumed_from"] == 1


def submitting_workers(stack, flow_run_id) -> list[str]:
    """The names of the workers that submitted the flow run, once per submission."""
    found = []
    for log in sorted(stack.home.glob("workers/*/worker.log")):
        for worker, submitted in SUBMITTED.findall(log.read_text()):
            if submitted == str(flow_run_id):
                found.append(worker)
    return found
