"""Where the workers run: local processes (`LocalLauncher`) or Ray actors placed by a Ray cluster
(`RayLauncher`, the only code that imports `ray`), each seen by the driver through the same
`WorkerHandle`. Either way a worker is a process of its own that serves one `WorkerSpec`."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Protocol

from trainflow.errors import UserInputError
from trainflow.network import free_ports
from trainflow.training.distributed.placement import tf_config
from trainflow.training.distributed.worker import WorkerSpec, serve

# How long the driver tries to reach a Ray cluster's address before calling it unreachable.
RAY_CONNECT_TIMEOUT_SECONDS = 5.0


class RayUnreachableError(UserInputError):
    """The Ray cluster named by --ray or RAY_ADDRESS does not answer."""


class WorkerHandle(Protocol):
    """A running worker as the driver sees it."""

    def exit_code(self) -> int | None:
        """None while it runs; 0 when it served its spec, else non-zero."""

    def killed(self) -> bool:
        """Whether it died without ending on its own (a signal, a lost actor)."""

    def describe_exit(self) -> str:
        """How it ended, for an error message: `died (signal SIGKILL)`, `exited (status 1)`."""

    def kill(self) -> None:
        """Stop it now, if it still runs, and reap it."""


class LocalWorker:
    """A worker process on this machine: `python -m trainflow.training.distributed.worker`."""

    def __init__(self, spec: WorkerSpec, cluster: str | None) -> None:
        environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
        if cluster is not None:
            environment["TF_CONFIG"] = cluster
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trainflow.training.distributed.worker"],
            stdin=subprocess.PIPE,
            env=environment,
        )
        self.process.stdin.write(spec.model_dump_json().encode())
        self.process.stdin.close()

    def exit_code(self) -> int | None:
        return self.process.poll()

    def killed(self) -> bool:
        return (self.process.poll() or 0) < 0

    def describe_exit(self) -> str:
        code = self.process.poll()
        if code is not None and code < 0:
            return f"died (signal {signal.Signals(-code).name})"
        return f"exited (status {code})"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class LocalLauncher:
    """Workers as processes of this machine, their collectives on free ports of 127.0.0.1."""

    driver_host = "127.0.0.1"

    def start(self, spec_of: Callable[[int], WorkerSpec], count: int) -> list[WorkerHandle]:
        addresses = [f"127.0.0.1:{port}" for port in free_ports(count)]
        return [
            LocalWorker(spec_of(rank), tf_config(addresses, rank) if count > 1 else None)
            for rank in range(count)
        ]


class TrainingActor:
    """The Ray actor a worker runs in: one process, one spec, then it is killed."""

    def address(self) -> str:
        """Where this actor's collective server can listen: its node's address, a free port."""
        import ray

        host = ray.util.get_node_ip_address()
        return f"{host}:{free_ports(1, host)[0]}"

    def run(self, spec_json: str, cluster: str | None) -> bool:
        from trainflow.environment import configure_environment

        configure_environment()
        os.environ.pop("TF_CONFIG", None)
        if cluster is not None:
            os.environ["TF_CONFIG"] = cluster
        return serve(WorkerSpec.model_validate_json(spec_json))


class RayWorker:
    """A worker in a Ray actor, seen through the result of its `run`."""

    def __init__(self, actor, result) -> None:
        self.actor = actor
        self.result = result
        self.ended: tuple[int, str] | None = None

    def exit_code(self) -> int | None:
        import ray

        if self.ended is None and ray.wait([self.result], timeout=0)[0]:
            try:
                served = ray.get(self.result)
                self.ended = (0 if served else 1, "exited (its run failed)")
            except ray.exceptions.RayActorError as error:
                self.ended = (-signal.SIGKILL, f"died (its Ray actor: {type(error).__name__})")
            except ray.exceptions.RayError as error:
                self.ended = (1, f"failed in Ray ({type(error).__name__})")
        return None if self.ended is None else self.ended[0]

    def killed(self) -> bool:
        return (self.exit_code() or 0) < 0

    def describe_exit(self) -> str:
        self.exit_code()
        return "is running" if self.ended is None else self.ended[1]

    def kill(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)


def _python_path() -> str:
    return os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))


class RayLauncher:
    """Workers as Ray actors of the cluster at `address` (`host:port` of its head), one CPU each,
    spread over its nodes; `TF_CONFIG` is built from the addresses the actors report. Every node
    must have trainflow installed (and the user's model module importable), as Ray requires, and
    the artifacts store's credentials in the environment its Ray processes were started with
    (they are not sent through Ray)."""

    def __init__(self, address: str) -> None:
        import ray

        self.address = address
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), RAY_CONNECT_TIMEOUT_SECONDS).close()
        except (OSError, ValueError) as error:
            raise RayUnreachableError(
                f"Ray cluster at {address!r} does not answer ({error.__class__.__name__}): "
                "start one with `ray start --head`, or fix --ray / RAY_ADDRESS (host:port)"
            ) from None
        if not ray.is_initialized():
            ray.init(
                address=address,
                logging_level=logging.WARNING,
                log_to_driver=False,  # the workers' log records come through the driver's link
                # The driver's directory first, so that a model's module found here is found there.
                runtime_env={"env_vars": {"PYTHONPATH": _python_path()}},
            )
        loopback = host in ("127.0.0.1", "localhost")
        self.driver_host = "127.0.0.1" if loopback else ray.util.get_node_ip_address()

    def start(self, spec_of: Callable[[int], WorkerSpec], count: int) -> list[WorkerHandle]:
        import ray

        actor_class = ray.remote(num_cpus=1, max_restarts=0)(TrainingActor)
        actors = [actor_class.options(scheduling_strategy="SPREAD").remote() for _ in range(count)]
        addresses = ray.get([actor.address.remote() for actor in actors])
        return [
            RayWorker(
                actor,
                actor.run.remote(
                    spec_of(rank).model_dump_json(),
                    tf_config(addresses, rank) if count > 1 else None,
                ),
            )
            for rank, actor in enumerate(actors)
        ]
