"""What `stack.json` records, read back across versions, and what `stack down` may signal."""

import json
import os

from app.stack.lifecycle import Stack, read_stack
from app.stack.postgres import Cluster, cluster_is_running, stop_cluster


def test_a_stack_json_of_one_worker_from_before_several_workers_still_reads(tmp_path):
    old = {"api_url": "http://127.0.0.1:4200/api", "server_pid": 11, "worker_pid": 12}
    (tmp_path / "stack.json").write_text(json.dumps(old))
    stack = read_stack(tmp_path)
    assert stack.worker_pids == [12] and stack.worker_pid == 12
    assert stack.postgres is None and stack.auth_file is None
    assert stack.ui_url == "http://127.0.0.1:4200"  # as the API's address, as printed then


def test_stack_json_keeps_the_first_worker_pid_for_its_older_readers():
    stack = Stack(api_url="http://127.0.0.1:1/api", server_pid=1, worker_pids=[2, 3])
    recorded = json.loads(stack.model_dump_json())
    assert recorded["worker_pids"] == [2, 3] and recorded["worker_pid"] == 2
    assert Stack.model_validate(recorded) == stack


def test_a_recorded_postgres_pid_now_held_by_another_process_is_left_alone(tmp_path):
    """The postmaster `up` started has ended and its pid went to another process (here, this
    one): neither counted as the cluster nor signalled by `down`."""
    cluster = Cluster(
        bin_dir=str(tmp_path / "bin"),
        directory=str(tmp_path / "cluster"),
        port=5432,
        pid=os.getpid(),
    )
    assert not cluster_is_running(cluster)
    stop_cluster(cluster)  # would stop this very process if it trusted the pid
    assert not cluster_is_running(cluster)


def test_the_ui_address_is_what_a_browser_opens():
    from app.stack.prefect_server import LocalServer

    assert LocalServer(port=4399).ui_url == "http://127.0.0.1:4399"
    on_every_address = LocalServer(host="0.0.0.0", port=4399)
    assert on_every_address.api_url == "http://127.0.0.1:4399/api"  # clients on this machine
    assert "0.0.0.0" not in on_every_address.ui_url  # a browser cannot open that address
    given = LocalServer(host="0.0.0.0", port=4399, ui_host="trainer.example.org")
    assert given.ui_url == "http://trainer.example.org:4399"
    assert LocalServer(host="::1", port=4399).ui_url == "http://[::1]:4399"
