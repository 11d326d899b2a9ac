"""Settings from AWS SSM Parameter Store, against moto's server mode: a real HTTP endpoint that
speaks the SSM API (boto3 reaches it through AWS_ENDPOINT_URL_SSM, as it would LocalStack).

Order: defaults -> YAML profile -> SSM (SCHEDULER_SSM_PATH) -> SCHEDULER_* environment.

Negative control: ``SCHEDULER_SSM_NEGATIVE_CONTROL=1`` stores the secret as a plain String
under another path and points the loader there: the SecureString test then fails (it checks the
parameter type), showing that the test tells a decrypted SecureString from a plain value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from scheduler_app.config import ConfigError, load_settings
from tests.support import free_port

NEGATIVE = os.environ.get("SCHEDULER_SSM_NEGATIVE_CONTROL") == "1"
JWT = "jwt-from-ssm-0123456789abcdef0123456789abcdef"
KEY = "key-from-ssm-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def ssm() -> Iterator[tuple[object, dict[str, str]]]:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.fail("pip install 'boto3' 'moto[server]' (the dev extra has them)")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_SSM": f"http://127.0.0.1:{port}",
    }
    saved = {name: os.environ.get(name) for name in aws}
    os.environ.update(aws)  # boto3 reads them from the process environment
    try:
        client = boto3.client("ssm")
        put = client.put_parameter
        put(Name="/scheduler/prod/access_token_ttl", Value="120", Type="String")
        put(Name="/scheduler/prod/log_level", Value="WARNING", Type="String")
        put(Name="/scheduler/prod/queues", Value="default,high,low,notifications",
            Type="StringList")  # fmt: skip
        put(Name="/scheduler/prod/secrets/jwt-secret", Value=JWT, Type="SecureString")
        put(Name="/scheduler/prod/secret_key", Value=KEY, Type="SecureString")
        put(Name="/scheduler/staging/log_level", Value="DEBUG", Type="String")
        put(Name="/scheduler/typo/acess_token_ttl", Value="1", Type="String")
        put(Name="/scheduler/bad/access_token_ttl", Value="soon", Type="String")
        put(Name="/scheduler/plain/secrets/jwt-secret", Value=JWT, Type="String")
        put(Name="/scheduler/plain/secret_key", Value=KEY, Type="String")
        yield client, aws
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def settings(path: str, **environ: str):
    return load_settings(environ={"SCHEDULER_SSM_PATH": path, **environ})


def test_parameters_below_the_path_become_settings(ssm) -> None:
    loaded = settings("/scheduler/prod/", SCHEDULER_PROFILE="production")
    assert loaded.access_token_ttl == 120  # typed like every other source
    assert loaded.log_level == "WARNING"
    assert loaded.queues == ("default", "high", "low", "notifications")
    # production's checks of the secrets pass with the values from SSM
    assert (loaded.jwt_secret, loaded.secret_key) == (JWT, KEY)
    # the path without its trailing slash is the same prefix; nothing of /staging leaks in
    assert settings("/scheduler/prod").log_level == "WARNING"


def test_secure_strings_are_decrypted(ssm) -> None:
    client, _ = ssm
    path = "/scheduler/plain/" if NEGATIVE else "/scheduler/prod/"
    stored = client.get_parameter(Name=f"{path}secret_key")["Parameter"]
    assert stored["Type"] == "SecureString"
    assert settings(path, SCHEDULER_PROFILE="production").secret_key == KEY


def test_environment_wins_over_ssm_and_ssm_over_the_profile(ssm) -> None:
    assert settings("/scheduler/prod/", SCHEDULER_LOG_LEVEL="ERROR").log_level == "ERROR"
    # the test profile sets its own access_token_ttl? SSM still comes after any profile
    profile_only = load_settings(environ={"SCHEDULER_PROFILE": "development"})
    assert profile_only.access_token_ttl != 120
    assert settings("/scheduler/prod/", SCHEDULER_PROFILE="development").access_token_ttl == 120


def test_unknown_or_invalid_parameters_are_refused(ssm) -> None:
    with pytest.raises(ConfigError, match=r"unknown settings \['acess_token_ttl'\]"):
        settings("/scheduler/typo/")
    with pytest.raises(ConfigError, match="setting access_token_ttl"):
        settings("/scheduler/bad/")
    with pytest.raises(ConfigError, match="must start with '/'"):
        settings("scheduler/prod")


def test_an_unreachable_store_stops_the_start(ssm) -> None:
    _, aws = ssm
    os.environ["AWS_ENDPOINT_URL_SSM"] = f"http://127.0.0.1:{free_port()}"
    try:
        with pytest.raises(ConfigError, match="SSM path /scheduler/prod/"):
            settings("/scheduler/prod/")
    finally:
        os.environ["AWS_ENDPOINT_URL_SSM"] = aws["AWS_ENDPOINT_URL_SSM"]
