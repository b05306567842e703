"""The `trainflow` command as a user runs it, in its own process."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import needs_chromium, rendered_page
from tests.conftest import STEPS_PER_EPOCH, TRAINFLOW

CLI_TIMEOUT = 300


def processes_with_environment(entry: bytes) -> list[int]:
    """Ids of the processes whose environment holds `entry` (NAME=value)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def trainflow(*args, env, check_status=0):
    completed = subprocess.run(
        [TRAINFLOW, *map(str, args)], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    assert completed.returncode == check_status, completed.stderr[-3000:]
    return completed


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["runs", "--help"]])
def test_help_does_not_import_tensorflow_or_prefect(argv):
    probe = (
        "import sys\nfrom app.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'prefect'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip().splitlines()[-1] == "[]"
    assert "usage: trainflow" in completed.stdout


def test_run_help_documents_every_option():
    completed = subprocess.run([TRAINFLOW, "run", "--help"], capture_output=True, text=True)
    for option in (
        "--dataset",
        "--model",
        "--epochs",
        "--batch-size",
        "--patience",
        "--seed",
        "--run-name",
        "--artifacts",
        "--fresh",
        "--fail-at-epoch",
        "--json",
    ):
        assert option in completed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs: Input should be greater than or equal to 1"),
        (["--run-name", "../escape"], "--run-name: run name '../escape' must start with"),
        (["--dataset", "csv:x"], "--dataset: dataset 'csv:x' is not one of"),
        (["--dataset", "idx:/no/such/dir"], "dataset path /no/such/dir does not exist"),
    ],
)
def test_bad_options_fail_with_one_line_and_status_2(args, message, cli_environment, artifacts):
    completed = trainflow(
        "run", *args, "--artifacts", artifacts, env=cli_environment, check_status=2
    )
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"trainflow: error: {message}"), lines
    assert "Traceback" not in completed.stderr
    assert not artifacts.exists()


def test_run_json_reports_files_that_exist(idx_dir, artifacts, cli_environment):
    completed = trainflow(
        "run",
        "--dataset",
        f"idx:{idx_dir}",
        "--epochs",
        "2",
        "--artifacts",
        artifacts,
        "--json",
        env=cli_environment,
    )
    summary = json.loads(completed.stdout)
    for key in ("model_path", "weights_path", "evaluation_path"):
        assert os.path.isfile(summary[key]), key
    assert os.path.isdir(summary["saved_model_path"])
    assert summary["epochs_completed"] == 2 and summary["resumed_from"] is None
    assert summary["run_dir"].endswith(summary["run_name"])
    assert f"Run {summary['run_name']} in" in completed.stderr
    # Its own server stops with it: no link to a page that dies, one line on how to see runs.
    assert "View at" not in completed.stderr and "http://127.0.0.1:" not in completed.stdout
    assert summary["flow_run_url"] is None
    record = json.loads((Path(summary["run_dir"]) / "run.json").read_text())
    assert record["flow_run_url"] is None and record["flow_run_id"]
    assert completed.stderr.count("trainflow stack up") == 1
    runs = json.loads(
        trainflow("runs", "--artifacts", artifacts, "--json", env=cli_environment).stdout
    )
    assert [(run["run_name"], run["status"], run["location"]) for run in runs] == [
        (summary["run_name"], "completed", summary["run_dir"])
    ]


def test_sigkilled_run_resumes_when_started_again_with_its_name(
    idx_dir, artifacts, cli_environment
):
    """SIGKILLed in its third epoch (by `--kill-at-step`, at a known step rather than whenever a
    poll sees a checkpoint): its own Prefect server goes down with it, `trainflow runs` says it
    was interrupted, and the same command resumes it from its second epoch's checkpoint."""
    args = ["run", "--dataset", f"idx:{idx_dir}", "--epochs", "4", "--patience", "4"]
    args += ["--run-name", "killed", "--artifacts", artifacts, "--json"]
    killed = subprocess.run(
        [TRAINFLOW, *map(str, args), "--kill-at-step", str(2 * STEPS_PER_EPOCH + 3)],
        env=cli_environment,
        capture_output=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # The run's local Prefect server went down with it: no process of this PREFECT_HOME is left.
    home = f"PREFECT_HOME={cli_environment['PREFECT_HOME']}".encode()
    deadline = time.monotonic() + 30
    while processes_with_environment(home):
        assert time.monotonic() < deadline, "the killed run's Prefect server outlived it"
        time.sleep(0.2)
    listed = trainflow("runs", "--artifacts", artifacts, env=cli_environment).stdout
    assert "killed  interrupted" in listed

    summary = json.loads(trainflow(*args, env=cli_environment).stdout)
    assert summary["resumed_from"] == 2 and summary["resumed_from_step"] == 2 * STEPS_PER_EPOCH
    assert summary["epochs_completed"] == 4


def test_keras_download_path_loads_mnist_or_names_the_way_out(tmp_path):
    """The real `keras.datasets` path: downloads where there is a network, else one clear error."""
    probe = (
        "from trainflow.data.sources import read_keras_dataset\n"
        "from trainflow.errors import DataSourceError\n"
        "try:\n    splits = read_keras_dataset('mnist')\n"
        "    print({name: split.images.shape for name, split in splits.items()})\n"
        "except DataSourceError as error:\n    print('ERROR', error)\n"
    )
    environment = {**os.environ, "KERAS_HOME": str(tmp_path / "keras")}
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=environment,
        timeout=CLI_TIMEOUT,
    )
    result = completed.stdout.strip().splitlines()[-1]
    if result.startswith("ERROR"):
        assert "could not download mnist through keras.datasets" in result
        assert "--dataset idx:DIR, npz:FILE, parquet:DIR or images:DIR" in result
    else:
        assert result == "{'train': (60000, 28, 28), 'test': (10000, 28, 28)}"


def test_heartbeats_and_ui_links_are_off_only_on_a_server_of_the_runs_own(capsys):
    from prefect.settings import PREFECT_UI_URL, get_current_settings

    from app.flow_runs import SEE_RUNS_IN_THE_UI, _on_a_server_of_its_own

    lasting = get_current_settings().flows.heartbeat_frequency
    assert lasting is not None  # Prefect's default: a server that outlives the run hears them
    with _on_a_server_of_its_own(None):  # against PREFECT_API_URL
        assert get_current_settings().flows.heartbeat_frequency == lasting
    assert capsys.readouterr().err == ""
    with _on_a_server_of_its_own(object()):  # a server started for this run, which dies with it
        assert get_current_settings().flows.heartbeat_frequency is None
        assert not PREFECT_UI_URL.value()  # Prefect's "View at" link is not logged
    assert capsys.readouterr().err.strip() == SEE_RUNS_IN_THE_UI
    assert get_current_settings().flows.heartbeat_frequency == lasting


def server_port_of(pid: int) -> int | None:
    """The port of the `prefect server start` child of process `pid`, once it has one."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"server" in command and b"--port" in command:
                return int(command[command.index(b"--port") + 1])
    return None


@needs_chromium
def test_a_browser_shows_a_run_in_flight_on_its_temporary_server(
    tmp_path, idx_dir, artifacts, cli_environment
):
    """The server a run starts for itself serves a UI that talks to it (on its free port, not
    4200) while the run lasts; the run is stopped by the test."""
    arguments = ["run", "--dataset", f"idx:{idx_dir}", "--epochs", "10000", "--patience", "10000"]
    arguments += ["--run-name", "in-flight", "--artifacts", str(artifacts)]
    with (tmp_path / "run.log").open("w") as log:
        process = subprocess.Popen(
            [TRAINFLOW, *arguments], env=cli_environment, stdout=log, stderr=subprocess.STDOUT
        )
    record_file = artifacts / "runs" / "in-flight" / "run.json"
    deadline = time.monotonic() + CLI_TIMEOUT
    try:
        while not record_file.is_file() or (port := server_port_of(process.pid)) is None:
            assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        flow_run_id = json.loads(record_file.read_text())["flow_run_id"]
        ui_url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{ui_url}/api/flow_runs/{flow_run_id}", timeout=30) as reply:
            name = json.load(reply)["name"]
        rendered_page(
            f"{ui_url}/runs/flow-run/{flow_run_id}",
            lambda dom: name in dom and "Running" in dom,
            tmp_path / "flow-run-in-flight.png",
        )
        assert process.poll() is None  # the page was of the run in flight
    finally:
        process.kill()
        process.wait()
