"""A flow of as many no-op tasks as the training flow has stages, timed: Prefect's own cost for
one `trainflow run` (flow run and task runs created, states reported, heartbeat thread joined).

    python -m bench.noop_flow   # prints {"seconds": ...}; needs PREFECT_API_URL
"""

import json
import time

from prefect import flow, task

TRAINING_FLOW_TASKS = 8  # start_run ... finish_run in flows/training.py


@task
def noop(index: int) -> int:
    return index


@flow
def noop_flow() -> int:
    return sum(noop(index) for index in range(TRAINING_FLOW_TASKS))


if __name__ == "__main__":
    began = time.monotonic()
    noop_flow()
    print(json.dumps({"seconds": time.monotonic() - began}))
