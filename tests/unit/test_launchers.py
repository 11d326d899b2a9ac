"""Every launcher of the API runs gunicorn with the one config module, and nothing it sets.

The compose file and the Helm chart are held to the same command in tests/unit/test_deploy.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ["-c", "python:scheduler_app.gunicorn_conf"]
# Settings that belong to the config module, not to a launcher's command line.
TUNING = re.compile(r"--(threads|worker-class|worker-connections|keep-alive|limit-request)")


def _assert_uses_the_config(argv: list[str]) -> None:
    assert argv[argv.index("gunicorn") + 1 : argv.index("gunicorn") + 3] == CONFIG, argv
    assert not [arg for arg in argv if TUNING.match(arg)], argv
    assert argv[-1] == "scheduler_app.wsgi:app", argv


def test_make_api_uses_the_config():
    (line,) = [
        line for line in (ROOT / "Makefile").read_text().splitlines() if "/gunicorn " in line
    ]
    _assert_uses_the_config([word.rsplit("/", 1)[-1] for word in line.split()])


def test_dockerfile_cmd_uses_the_config():
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    _assert_uses_the_config(json.loads(cmd))


def test_standalone_uses_the_config():
    from scheduler_app.standalone import _children

    (api,) = [spec for spec in _children(8000, None, "secret", {}) if spec.name == "api"]
    argv = [arg for arg in api.argv if arg != sys.executable]
    argv[argv.index("-m") : argv.index("gunicorn") + 1] = ["gunicorn"]
    _assert_uses_the_config(argv)


def test_bench_uses_the_config():
    from bench.environment import gunicorn_argv

    argv = gunicorn_argv(8000, "scheduler_app.wsgi:app")
    argv = argv[argv.index("gunicorn") :]
    _assert_uses_the_config(argv)


def test_the_config_sets_an_event_loop_worker_and_the_hooks():
    from scheduler_app import gunicorn_conf

    assert gunicorn_conf.worker_class == "gevent"
    assert callable(gunicorn_conf.post_fork) and callable(gunicorn_conf.child_exit)
