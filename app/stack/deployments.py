"""What `trainflow stack up` puts on its server: the work pool, the deployments of
`deployments/prefect.yaml` and the automations of `deployments/automations.yaml`, through the
`prefect` command as a user would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from app.stack.prefect_server import PREFECT_COMMAND
from app.stack.workers import WORK_POOL

PREFECT_FILE = "deployments/prefect.yaml"
AUTOMATIONS_FILE = Path("deployments/automations.yaml")


def deploy_to(project_dir: Path, environment: dict[str, str]) -> None:
    """Create the work pool, deploy `deployments/prefect.yaml` and install
    `deployments/automations.yaml` (once) on the server `environment` names.

    Each `prefect` command spends seconds importing Prefect: the ones that do not depend on each
    other run side by side (the work pool with the automation checks, then the deployments,
    which need the pool, with the automations' creation)."""
    automations = yaml.safe_load((project_dir / AUTOMATIONS_FILE).read_text())["automations"]
    pool = [PREFECT_COMMAND, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"]
    inspections = [
        [PREFECT_COMMAND, "automation", "inspect", automation["name"]] for automation in automations
    ]
    found = _run_together([pool, *inspections], project_dir, environment)
    _raise_for_failure(pool, found[0])
    deploy = [PREFECT_COMMAND, "--no-prompt", "deploy", "--all", "--prefect-file", PREFECT_FILE]
    creations = [
        [PREFECT_COMMAND, "automation", "create", "--from-json", json.dumps(automation)]
        for automation, inspected in zip(automations, found[1:], strict=True)
        if inspected.returncode != 0
    ]
    commands = [deploy, *creations]
    for command, completed in zip(
        commands, _run_together(commands, project_dir, environment), strict=True
    ):
        _raise_for_failure(command, completed)


def _run_together(
    commands: list[list[str]], cwd: Path, environment: dict[str, str]
) -> list[subprocess.CompletedProcess]:
    """Run `commands` at the same time; their completed processes, in order."""
    started = [
        subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    completed = []
    for command, process in zip(commands, started, strict=True):
        stdout, stderr = process.communicate()
        completed.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return completed


def _raise_for_failure(command: list[str], completed: subprocess.CompletedProcess) -> None:
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[1:4])} failed: {completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
