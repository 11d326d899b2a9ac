"""The settings loader: defaults, profile, environment, overrides, validation."""

from __future__ import annotations

import pytest

from scheduler_app.config import DEFAULT_SECRET, ConfigError, load_settings
from scheduler_app.services.broker.celery_config import celery_config, to_broker_priority


def test_environment_overrides_profile_and_defaults():
    settings = load_settings(
        environ={
            "SCHEDULER_PROFILE": "test",
            "SCHEDULER_LOOKAHEAD_SECONDS": "7.5",
            "SCHEDULER_QUEUES": "default,bulk",
            "SCHEDULER_LOG_JSON": "yes",
        }
    )
    assert settings.profile == "test"
    assert settings.lookahead_seconds == 7.5
    assert settings.queues == ("default", "bulk")
    assert settings.log_json is True
    assert settings.promoter_interval == 0.1  # from the test profile
    assert settings.max_batch == 1000  # typed default


def test_overrides_win_over_environment():
    settings = load_settings({"max_batch": 10}, environ={"SCHEDULER_MAX_BATCH": "20"})
    assert settings.max_batch == 10


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SCHEDULER_PROFILE": "nope"}, "unknown profile"),
        ({"SCHEDULER_MAX_BATCH": "many"}, "max_batch"),
        ({"SCHEDULER_LOG_JSON": "perhaps"}, "not a boolean"),
        ({"SCHEDULER_DATABASE_URL": "mysql://x/y"}, "PostgreSQL"),
        ({"SCHEDULER_BROKER_URL": "amqp://x"}, "Redis"),
        ({"SCHEDULER_DEFAULT_QUEUE": "other"}, "default_queue"),
        ({"SCHEDULER_LOOKAHEAD_SECONDS": "500"}, "visibility_timeout"),
    ],
)
def test_bad_settings_stop_the_process_at_start(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown settings"):
        load_settings({"no_such_thing": 1}, environ={})


def test_production_refuses_default_or_short_secrets():
    with pytest.raises(ConfigError, match="SCHEDULER_SECRET_KEY"):
        load_settings(environ={"SCHEDULER_PROFILE": "production"})
    with pytest.raises(ConfigError, match="SCHEDULER_JWT_SECRET"):
        load_settings(
            environ={
                "SCHEDULER_PROFILE": "production",
                "SCHEDULER_SECRET_KEY": "x" * 40,
                "SCHEDULER_JWT_SECRET": "short",
            }
        )
    settings = load_settings(
        environ={
            "SCHEDULER_PROFILE": "production",
            "SCHEDULER_SECRET_KEY": "s" * 40,
            "SCHEDULER_JWT_SECRET": "j" * 40,
        }
    )
    assert settings.jwt_secret != DEFAULT_SECRET


def test_celery_config_derives_from_settings():
    settings = load_settings(
        {"broker_url": "redis://example:6379/2", "visibility_timeout": 900}, environ={}
    )
    conf = celery_config(settings)
    assert conf["broker_url"] == "redis://example:6379/2"
    assert conf["broker_transport_options"]["visibility_timeout"] == 900
    assert conf["broker_transport_options"]["priority_steps"] == list(range(10))
    assert conf["task_acks_late"] is True and conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"]


def test_api_priority_nine_is_broker_priority_zero():
    assert [to_broker_priority(p) for p in (9, 5, 0)] == [0, 4, 9]


def test_unknown_scheduler_variables_warn_in_development_and_stop_production(caplog):
    typo = {"SCHEDULER_PROMOTR_INTERVAL": "5"}
    with caplog.at_level("WARNING"):
        load_settings(environ=typo)
    assert "SCHEDULER_PROMOTR_INTERVAL" in caplog.text
    secrets = {
        "SCHEDULER_SECRET_KEY": "k" * 40,
        "SCHEDULER_JWT_SECRET": "j" * 40,
        "SCHEDULER_PROFILE": "production",
    }
    load_settings(environ=secrets)  # the control: production starts without the typo
    with pytest.raises(ConfigError, match="SCHEDULER_PROMOTR_INTERVAL"):
        load_settings(environ={**secrets, **typo})


def test_production_refuses_one_secret_for_both_signatures():
    same = "s" * 40
    with pytest.raises(ConfigError, match="must differ"):
        load_settings(
            environ={
                "SCHEDULER_PROFILE": "production",
                "SCHEDULER_SECRET_KEY": same,
                "SCHEDULER_JWT_SECRET": same,
            }
        )


@pytest.mark.parametrize("value", ["0", "1001"])
def test_max_batch_stays_within_what_the_schema_allows(value):
    with pytest.raises(ConfigError, match="max_batch"):
        load_settings(environ={"SCHEDULER_MAX_BATCH": value})
