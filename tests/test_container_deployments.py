"""The container deployments (deployments/containers.yaml) and the image they run in (Dockerfile).

There is no Docker engine and no Kubernetes cluster here, so no container starts. What is checked
for real: the build context (every COPY source exists and is not ignored, the package builds from
exactly the copied files, the entrypoints load from the copied tree); and, on a real `prefect
server start` on 127.0.0.1 with its own PREFECT_HOME, the registration as the README does it (the
Docker and Kubernetes work pools created offline, `prefect deploy`), what Prefect stores, and the
job configuration a worker computes for a flow run, where the store's Secret blocks are resolved,
through the code the Docker and Kubernetes workers inherit from Prefect.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import yaml
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import validate
from prefect.workers.base import BaseJobConfiguration

from app.stack.prefect_server import PREFECT_COMMAND, LocalServer
from tests.conftest import REPO_ROOT
from trainflow.config import RunConfig

CONTAINERS_FILE = REPO_ROOT / "deployments" / "containers.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
POOL_TYPES = {"trainflow-docker": "docker", "trainflow-kubernetes": "kubernetes"}
FLOW_NAMES = {
    "flows/training.py:training_flow": "trainflow",
    "flows/retraining.py:retraining_flow": "trainflow-retrain",
}
REQUIRED_ENV = {
    "PREFECT_LOGGING_EXTRA_LOGGERS": "trainflow",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
}
SECRET_REFERENCE = re.compile(r"^\{\{\s*prefect\.blocks\.secret\.([a-z0-9-]+)\s*\}\}$")
COMMAND_TIMEOUT = 300


# --- The image ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), in order, continuation lines joined."""
    instructions, pending = [], []
    for line in DOCKERFILE.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            pending.append(text[:-1].strip())
            continue
        instruction, _, arguments = " ".join([*pending, text]).partition(" ")
        instructions.append((instruction.upper(), arguments.strip()))
        pending = []
    return instructions


def arguments_of(name: str) -> list[str]:
    return [
        arguments for instruction, arguments in dockerfile_instructions() if instruction == name
    ]


def copy_instructions() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context."""
    copies = []
    for arguments in arguments_of("COPY"):
        words = shlex.split(arguments)
        assert not any(word.startswith("--from") for word in words), arguments
        *sources, destination = [word for word in words if not word.startswith("--")]
        copies.append((sources, destination))
    return copies


def docker_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker matches it: from the context's root, `*` and `?` within
    one path element, `**` across elements."""
    regex, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
        elif pattern[index] in "*?":
            regex, index = regex + ("[^/]*" if pattern[index] == "*" else "[^/]"), index + 1
        else:
            regex, index = regex + re.escape(pattern[index]), index + 1
    return re.compile(regex)


def is_ignored(relative: str) -> bool:
    """Whether .dockerignore keeps `relative` (or a directory holding it) out of the context."""
    parts = PurePosixPath(relative).parts
    prefixes = ["/".join(parts[: count + 1]) for count in range(len(parts))]
    ignored = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern = docker_pattern(line.lstrip("!").strip("/"))
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = not line.startswith("!")
    return ignored


def stage_image_tree(root: Path) -> Path:
    """Lay out what the COPY instructions put in the image under `root`, as the build would (the
    ignored files left out), and return the working directory in it."""
    (workdir,) = arguments_of("WORKDIR")
    for sources, destination in copy_instructions():
        target = root / PurePosixPath(workdir, destination).relative_to("/")
        for source in sources:
            origin = REPO_ROOT / source
            if origin.is_dir():
                files = [(path, target / path.relative_to(origin)) for path in origin.rglob("*")]
            else:
                files = [(origin, target / origin.name if destination.endswith("/") else target)]
            for path, copied in files:
                if path.is_file() and not is_ignored(path.relative_to(REPO_ROOT).as_posix()):
                    copied.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, copied)
    return root / PurePosixPath(workdir).relative_to("/")


def project_packages() -> set[str]:
    """The top-level packages `pip install .` installs (pyproject.toml's package find)."""
    include = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    return {
        path.name
        for path in REPO_ROOT.iterdir()
        if (path / "__init__.py").is_file()
        and any(fnmatch.fnmatch(path.name, pattern) for pattern in include)
    }


@pytest.fixture(scope="module")
def containers() -> dict:
    return yaml.safe_load(CONTAINERS_FILE.read_text())


def test_the_image_installs_the_lock_then_the_project_and_runs_as_a_non_root_user(containers):
    instructions = dockerfile_instructions()
    assert arguments_of("FROM") == ["python:3.11-slim"]
    (pull_step,) = containers["pull"]
    assert arguments_of("WORKDIR") == [
        pull_step["prefect.deployments.steps.set_working_directory"]["directory"]
    ]
    environment = dict(
        pair.split("=", 1) for arguments in arguments_of("ENV") for pair in shlex.split(arguments)
    )
    assert environment["PREFECT_LOGGING_EXTRA_LOGGERS"] == "trainflow"

    def position(instruction: str, text: str) -> int:
        (index,) = [
            index
            for index, (name, arguments) in enumerate(instructions)
            if name == instruction and text in arguments
        ]
        return index

    assert (
        position("COPY", "requirements.lock")
        < position("RUN", "pip install -r requirements.lock")
        < position("COPY", "pyproject.toml")
        < position("RUN", "pip install --no-deps .")
        < position("USER", "")
    )
    user = arguments_of("USER")[-1].partition(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "a numeric id, for runAsNonRoot"
    assert any(f"--uid {user}" in arguments for arguments in arguments_of("RUN"))


def test_every_copy_source_exists_and_is_in_the_build_context():
    sources = [source for sources, _ in copy_instructions() for source in sources]
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not is_ignored(source), f"COPY {source}: .dockerignore leaves it out"
    assert is_ignored(".venv/bin/python") and is_ignored("flows/__pycache__/training.pyc")
    # pip install . needs the metadata, the readme it names and every package it installs.
    readme = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert {"pyproject.toml", readme, *project_packages()} <= set(sources)


def test_the_package_builds_and_the_entrypoints_load_from_the_copied_files(tmp_path, containers):
    """`pip install --no-deps .` as the image runs it, offline and from exactly the files the
    Dockerfile copies; then each deployment's entrypoint loaded as `prefect flow-run execute`
    loads it, in that tree (not in this repository)."""
    tree = stage_image_tree(tmp_path / "image")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--quiet", "--wheel-dir", str(tmp_path / "wheels"), "."],
        check=False,
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("trainflow-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist()}
        (entry_points,) = [name for name in archive.namelist() if name.endswith("entry_points.txt")]
        assert "trainflow = app.cli:entry_point" in archive.read(entry_points).decode()
    assert {name for name in top_level if not name.endswith(".dist-info")} == project_packages()

    entrypoints = sorted({deployment["entrypoint"] for deployment in containers["deployments"]})
    assert entrypoints == sorted(FLOW_NAMES)
    program = (
        "import json, sys\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        "flows = {entrypoint: load_flow_from_entrypoint(entrypoint) for entrypoint in sys.argv[1:]}\n"
        "modules = ('trainflow.config', 'tasks.train_model', 'flows.training')\n"
        "print(json.dumps({'names': {entrypoint: flow.name for entrypoint, flow in flows.items()},\n"
        "                  'files': [sys.modules[name].__file__ for name in modules]}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program, *entrypoints],
        check=False,
        cwd=tree,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert result["names"] == FLOW_NAMES
    for file in result["files"]:
        assert Path(file).is_relative_to(tree), file


# --- The registration on a real Prefect server ---------------------------------------------------


class ContainerJobConfiguration(BaseJobConfiguration):
    """The job configuration a Docker or Kubernetes worker builds for a flow run (their classes
    live in prefect-docker and prefect-kubernetes, which are not installed here): Prefect's base,
    which lays the deployment's and the flow run's job variables over the work pool's template
    and resolves block references, plus where those workers keep the image."""

    image: str | None = None  # the Docker worker's
    job_manifest: dict | None = None  # the Kubernetes worker's, which holds the image

    @property
    def container_image(self) -> str | None:
        if self.job_manifest is None:
            return self.image
        (container,) = self.job_manifest["spec"]["template"]["spec"]["containers"]
        return container["image"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("containers-prefect")
    with LocalServer(home=home / "server") as running:
        yield running.api_url, home


def prefect(server, *arguments: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """A `prefect` command aimed at the test server, as a user runs it."""
    api_url, home = server
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    environment.update(PREFECT_HOME=str(home / "client"), PREFECT_API_URL=api_url)
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        [PREFECT_COMMAND, *arguments],
        check=False,
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def succeeded(completed: subprocess.CompletedProcess) -> bool:
    return completed.returncode == 0


@pytest.fixture(scope="module")
def pools(server, containers, tmp_path_factory) -> dict[str, dict]:
    """The two work pools as the README creates them: `prefect work-pool create --type` (offline:
    the server falls back on the worker metadata Prefect ships), then the type's default base job
    template with the store's secret references as the default of `env`, through `prefect
    work-pool update`. Returns each pool's default template."""
    directory = tmp_path_factory.mktemp("templates")
    defaults = {}
    for name, pool_type in POOL_TYPES.items():
        completed = prefect(server, "work-pool", "create", name, "--type", pool_type)
        assert succeeded(completed), completed.stdout + completed.stderr
        template_file = directory / f"{name}.json"
        get_default = ("work-pool", "get-default-base-job-template", "--type", pool_type)
        completed = prefect(server, *get_default, "--file", str(template_file))
        assert succeeded(completed), completed.stdout + completed.stderr
        defaults[name] = json.loads(template_file.read_text())
        with (
            temporary_settings({PREFECT_API_URL: server[0]}),
            get_client(sync_client=True) as client,
        ):
            assert client.read_work_pool(name).base_job_template == defaults[name]

        template = json.loads(template_file.read_text())
        template["variables"]["properties"]["env"]["default"] = containers["definitions"][
            "work_pool_env"
        ]
        template_file.write_text(json.dumps(template))
        update = ("work-pool", "update", name, "--base-job-template", str(template_file))
        completed = prefect(server, *update)
        assert succeeded(completed), completed.stdout + completed.stderr
    return defaults


@pytest.fixture(scope="module")
def deployed(server, pools):
    """`prefect --no-prompt deploy --all --prefect-file deployments/containers.yaml`, before any
    Secret block exists. Returns the file's bytes from before the command."""
    before = CONTAINERS_FILE.read_bytes()
    completed = prefect(
        server, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/containers.yaml"
    )
    assert succeeded(completed), completed.stdout[-3000:] + completed.stderr[-3000:]
    return before


@pytest.fixture
def client(server):
    with (
        temporary_settings({PREFECT_API_URL: server[0]}),
        get_client(sync_client=True) as client,
    ):
        yield client


def declared_deployments(containers) -> dict[str, dict]:
    """containers.yaml's deployments by their full name, FLOW/DEPLOYMENT."""
    return {
        f"{FLOW_NAMES[deployment['entrypoint']]}/{deployment['name']}": deployment
        for deployment in containers["deployments"]
    }


def secret_references(containers) -> dict[str, str]:
    """The environment variables the pools take from Secret blocks: {variable: block name}."""
    return {
        variable: SECRET_REFERENCE.match(reference)[1]
        for variable, reference in containers["definitions"]["work_pool_env"].items()
    }


def test_the_work_pools_are_docker_and_kubernetes_and_keep_the_secret_references(
    client, pools, containers
):
    assert set(secret_references(containers)) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for name, pool_type in POOL_TYPES.items():
        pool = client.read_work_pool(name)
        assert pool.type == pool_type
        variables = pool.base_job_template["variables"]["properties"]
        assert {"image", "image_pull_policy", "env"} <= set(variables)
        # Stored as written, unresolved: the worker resolves them when a flow run starts.
        assert variables["env"]["default"] == containers["definitions"]["work_pool_env"]
        variables["env"].pop("default")
        assert pool.base_job_template == pools[name]


def test_the_deployments_run_the_image_with_the_env_and_no_credentials(
    client, deployed, containers
):
    assert CONTAINERS_FILE.read_bytes() == deployed, "prefect deploy must not rewrite the file"
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    (pull_step,) = containers["pull"]
    declared = declared_deployments(containers)
    assert {deployment["work_pool"]["name"] for deployment in declared.values()} == set(POOL_TYPES)
    for name, deployment in declared.items():
        stored = client.read_deployment_by_name(name)
        assert stored.work_pool_name == deployment["work_pool"]["name"]
        assert client.read_work_pool(stored.work_pool_name).type in POOL_TYPES.values()
        assert stored.entrypoint == deployment["entrypoint"]
        assert stored.pull_steps == [pull_step]
        assert stored.job_variables == deployment["work_pool"]["job_variables"]
        assert stored.job_variables["image"] == f"trainflow:{version}"
        env = stored.job_variables["env"]
        assert env.items() >= REQUIRED_ENV.items()
        assert {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"} <= set(env)
        assert not set(secret_references(containers)) & set(env)
        assert "prefect.blocks" not in json.dumps(stored.job_variables)


def test_the_nightly_retraining_is_scheduled_and_active_on_kubernetes_only(client, deployed):
    schedules = {
        name: [
            (schedule.schedule.cron, schedule.schedule.timezone, schedule.active)
            for schedule in client.read_deployment_by_name(name).schedules
        ]
        for name in (
            "trainflow/train-docker",
            "trainflow/train-kubernetes",
            "trainflow-retrain/nightly-retrain-docker",
            "trainflow-retrain/nightly-retrain-kubernetes",
        )
    }
    assert schedules == {
        "trainflow/train-docker": [],
        "trainflow/train-kubernetes": [],
        "trainflow-retrain/nightly-retrain-docker": [("0 2 * * *", "UTC", False)],
        "trainflow-retrain/nightly-retrain-kubernetes": [("0 2 * * *", "UTC", True)],
    }


def test_the_parameters_validate_against_the_flows_schema(client, deployed, containers):
    for name, deployment in declared_deployments(containers).items():
        stored = client.read_deployment_by_name(name)
        flow = load_flow_from_entrypoint(str(REPO_ROOT / deployment["entrypoint"]))
        assert stored.parameters == deployment["parameters"]
        assert stored.parameter_openapi_schema == parameter_schema(flow).model_dump(
            exclude_unset=True
        )
        assert stored.enforce_parameter_schema
        validate(stored.parameters, stored.parameter_openapi_schema, raise_on_error=True)
        config = flow.validate_parameters(stored.parameters)["config"]
        assert isinstance(config, RunConfig)
        assert config.dataset == "mnist" and config.checkpoint_every == 100
    # The server holds runs to that schema: a config RunConfig refuses is refused.
    stored = client.read_deployment_by_name("trainflow/train-kubernetes")
    bad = {"config": {**stored.parameters["config"], "epochs": 0}}
    refused = "Validation failed for field 'config.epochs'"
    with pytest.raises(PrefectHTTPStatusError, match=refused):
        client.create_flow_run_from_deployment(stored.id, parameters=bad)


@pytest.mark.xfail(
    RunConfig.model_fields["artifacts"].annotation is Path,
    reason="RunConfig.artifacts is a plain Path here: it turns s3://… into s3:/…",
    strict=True,
)
def test_the_artifacts_url_survives_the_flows_validation(containers):
    url = containers["definitions"]["config"]["artifacts"]
    assert url.startswith("s3://")
    assert str(RunConfig.model_validate({"artifacts": url}).artifacts) == url


async def job_configuration(api_url: str, name: str, **job_variables) -> ContainerJobConfiguration:
    """A new flow run of deployment `name`, and the job configuration a worker of its pool
    computes for it (the worker's own call, without starting anything)."""
    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(name)
            pool = await client.read_work_pool(deployment.work_pool_name)
            flow_run = await client.create_flow_run_from_deployment(
                deployment.id, job_variables=job_variables
            )
            return await ContainerJobConfiguration.resolve_for_flow_run(
                flow_run,
                client=client,
                work_pool=pool,
                worker_name="test-worker",
                deployment=deployment,
            )


def test_a_worker_resolves_the_store_secrets_when_a_flow_run_starts(
    server, client, deployed, containers
):
    api_url, _ = server
    references = secret_references(containers)
    declared = declared_deployments(containers)
    # Deploying needed no Secret block; starting a flow run does.
    for name in declared:
        with pytest.raises(ObjectNotFound, match="Block not found: 'trainflow-store-"):
            asyncio.run(job_configuration(api_url, name))

    fake_values = {block: f"fake-{block}" for block in references.values()}
    with temporary_settings({PREFECT_API_URL: api_url}):
        for block, value in fake_values.items():
            Secret(value=value).save(block, overwrite=True)

    for name, deployment in declared.items():
        job_variables = deployment["work_pool"]["job_variables"]
        configuration = asyncio.run(job_configuration(api_url, name))
        assert configuration.container_image == job_variables["image"]
        assert configuration.env.items() >= job_variables["env"].items()
        for variable, block in references.items():
            assert configuration.env[variable] == fake_values[block]
        # Nothing stored took the values in: not the deployment, not the pool.
        stored = client.read_deployment_by_name(name)
        pool = client.read_work_pool(stored.work_pool_name)
        for value in fake_values.values():
            assert value not in json.dumps(stored.job_variables)
            assert value not in json.dumps(pool.base_job_template)

    # A run may bring its own image and more env; the deployment's env and the secrets stay.
    configuration = asyncio.run(
        job_configuration(
            api_url,
            "trainflow/train-kubernetes",
            image="registry.example.com/trainflow:0.1.1",
            env={"TRAINFLOW_NOTE": "one run"},
        )
    )
    assert configuration.container_image == "registry.example.com/trainflow:0.1.1"
    assert configuration.env["TRAINFLOW_NOTE"] == "one run"
    assert configuration.env.items() >= REQUIRED_ENV.items()
    assert configuration.env["AWS_ACCESS_KEY_ID"] == fake_values[references["AWS_ACCESS_KEY_ID"]]


def test_a_secret_reference_in_deployment_job_variables_is_stored_resolved(
    server, client, pools, tmp_path
):
    """Why containers.yaml keeps the credentials out of the deployments' job variables: there,
    `prefect deploy` resolves a block reference at deploy time (the block must exist) and stores
    the secret's value in the deployment."""
    (tmp_path / "noop.py").write_text(
        "from prefect import flow\n\n\n@flow(name='noop')\ndef noop() -> None:\n    pass\n"
    )
    project = {
        "name": "control",
        "build": None,
        "push": None,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "/tmp"}}],
        "deployments": [
            {
                "name": "secret-in-job-variables",
                "entrypoint": "noop.py:noop",
                "work_pool": {
                    "name": "trainflow-docker",
                    "job_variables": {
                        "env": {"TOKEN": "{{ prefect.blocks.secret.trainflow-control-token }}"}
                    },
                },
            }
        ],
    }
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(project))
    deploy = ("--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml")

    completed = prefect(server, *deploy, cwd=tmp_path)
    assert not succeeded(completed)
    assert "Block not found: 'trainflow-control-token'" in completed.stdout + completed.stderr

    with temporary_settings({PREFECT_API_URL: server[0]}):
        Secret(value="control-token-value").save("trainflow-control-token", overwrite=True)
    completed = prefect(server, *deploy, cwd=tmp_path)
    assert succeeded(completed), completed.stdout[-3000:] + completed.stderr[-3000:]
    stored = client.read_deployment_by_name("noop/secret-in-job-variables")
    assert stored.job_variables == {"env": {"TOKEN": "control-token-value"}}
