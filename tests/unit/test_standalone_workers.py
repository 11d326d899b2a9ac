"""`manage.py standalone --workers N`: N worker processes, each with a name of its own."""

from __future__ import annotations

from click.testing import CliRunner

from scheduler_app.standalone import _children


def _workers(specs):
    return [spec for spec in specs if "worker" in spec.argv and "tasks.worker" in spec.argv]


def test_one_worker_keeps_the_name_earlier_runs_stored():
    [worker] = _workers(_children(8000, None, "secret", {}))
    assert worker.name == "worker"
    assert worker.argv[worker.argv.index("--hostname") + 1] == "standalone@%h"


def test_n_workers_are_n_processes_with_their_own_names():
    workers = _workers(_children(8000, None, "secret", {}, workers=3))
    assert [w.name for w in workers] == ["worker-1", "worker-2", "worker-3"]
    names = [w.argv[w.argv.index("--hostname") + 1] for w in workers]
    assert names == ["standalone-1@%h", "standalone-2@%h", "standalone-3@%h"]
    # each soft-shuts down on SIGTERM, like the single worker
    assert all(w.env["REMAP_SIGTERM"] == "SIGQUIT" for w in workers)


def test_the_cli_refuses_zero_workers():
    import manage

    result = CliRunner().invoke(manage.cli, ["standalone", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_the_supervisor_waits_longer_than_a_worker_soft_shutdown():
    from scheduler_app.standalone import stop_timeout

    # killed inside its soft shutdown, a worker could not hand its running tasks back
    assert stop_timeout({}) > 25.0
    assert stop_timeout({"SCHEDULER_SHUTDOWN_TIMEOUT": "90"}) > 90.0
