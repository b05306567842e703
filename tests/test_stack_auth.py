"""No open doors: a stack that asks for credentials (`--auth`, and any `--host` but loopback)
refuses clients without them, serves and runs flows for clients with them, and never shows the
secret: not in its output, stack.json, nor the logs it writes."""

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from app.stack.credentials import redact_url, requires_auth
from app.stack.lifecycle import read_stack, stack_down
from app.stack.prefect_server import PREFECT_COMMAND, free_port
from tests.conftest import REPO_ROOT, TRAINFLOW, synthetic_images, write_idx_pair

TIMEOUT = 300
DEPLOYMENT_URL = "{api_url}/deployments/name/trainflow/train"


@pytest.mark.parametrize(
    ("host", "auth", "expected"),
    [
        ("127.0.0.1", False, False),
        ("127.0.0.2", False, False),
        ("::1", False, False),
        ("localhost", False, False),
        ("127.0.0.1", True, True),
        ("0.0.0.0", False, True),
        ("::", False, True),
        ("192.168.1.20", False, True),
        ("build-machine.example", False, True),
    ],
)
def test_every_address_but_loopback_requires_credentials(host, auth, expected):
    assert requires_auth(host, auth) is expected


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://prefect:s3cr%2Ft@db:5432/prefect",
            "postgresql+asyncpg://prefect:***@db:5432/prefect",
        ),
        ("postgresql+asyncpg://prefect@db/prefect", "postgresql+asyncpg://prefect@db/prefect"),
        ("sqlite+aiosqlite:////home/x/prefect.db", "sqlite+aiosqlite:////home/x/prefect.db"),
    ],
)
def test_database_urls_are_shown_without_their_password(url, shown):
    assert redact_url(url) == shown


def request_status(url: str, auth_string: str | None) -> int:
    """The HTTP status of a GET of `url`, with basic auth when `auth_string` is given."""
    headers = {}
    if auth_string is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_stack_with_auth_refuses_clients_without_credentials_and_keeps_the_secret(tmp_path):
    home = tmp_path / "stack-home"
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY")
    }
    environment["PREFECT_WORKER_QUERY_SECONDS"] = "1"

    def stack(*arguments: str) -> subprocess.CompletedProcess:
        completed = subprocess.run(
            [TRAINFLOW, "stack", *arguments, "--home", str(home)],
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
        return completed

    up = stack("up", "--auth", "--port", str(free_port()))
    try:
        record = read_stack(home)
        recorded = (home / "stack.json").read_text()
        auth_file = home / "auth"
        assert auth_file.stat().st_mode & 0o777 == 0o600
        secret = auth_file.read_text()
        user, _, password = secret.partition(":")
        assert user == "admin" and len(password) >= 24
        assert up.stdout.splitlines()[-2:] == [
            f"  export PREFECT_API_URL={record.api_url}",
            f'  export PREFECT_API_AUTH_STRING="$(cat {auth_file})"',
        ]

        deployment = DEPLOYMENT_URL.format(api_url=record.api_url)
        assert request_status(deployment, None) == 401
        assert request_status(deployment, f"admin:{password[::-1]}") == 401
        assert request_status(deployment, secret) == 200

        source = tmp_path / "idx"
        write_idx_pair(source, "t10k", *synthetic_images(400, seed=1))
        config = {"dataset": f"idx:{source}", "epochs": 1, "artifacts": str(tmp_path / "artifacts")}
        command = [PREFECT_COMMAND, "deployment", "run", "trainflow/train", "--watch"]
        command += ["--param", "config=" + json.dumps(config)]
        client = {**environment, "PREFECT_API_URL": record.api_url}
        refused = subprocess.run(
            command, env=client, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        assert refused.returncode != 0
        assert not (tmp_path / "artifacts").exists()
        # The worker and the flow run's process authenticate with the stack's secret too.
        ran = subprocess.run(
            command,
            env={**client, "PREFECT_API_AUTH_STRING": secret},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        assert "Flow run finished successfully in 'Completed'" in ran.stdout
        (run_record,) = (tmp_path / "artifacts" / "runs").glob("*/run.json")
        assert json.loads(run_record.read_text())["status"] == "completed"

        down = stack("down")
        assert not (home / "stack.json").exists()
        texts = {"up": up.stdout + up.stderr, "down": down.stdout + down.stderr}
        texts["stack.json"] = recorded
        for log in (home / "server.log", home / "workers" / "1" / "worker.log"):
            texts[str(log)] = log.read_text()
        assert "Worker 'trainflow-worker-1' submitting flow run" in texts[str(log)]
        for name, text in texts.items():
            assert password not in text, f"the secret is in {name}"
    finally:
        if (home / "stack.json").exists():  # a failed check must not leave the stack running
            stack_down(home)
