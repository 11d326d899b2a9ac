"""Grafana dashboards and the Helm chart's monitoring templates.

The dashboards are grafana-foundation-sdk output (docker/grafana/dashboards.py): the committed
JSON must be exactly what the builders make, load back into the SDK's Dashboard model, and
query only metrics the platform exports. The chart ships the same JSON, the same alert rules
(PrometheusRule) and a KEDA ScaledObject that never coexists with the CPU HPA.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import yaml

from tests.unit.test_deploy import CHART, DOCKER, render, values

GENERATOR = DOCKER / "grafana" / "dashboards.py"
COMPOSE_DASHBOARDS = DOCKER / "grafana" / "provisioning" / "dashboards"
# What the API, workers and the scheduler process export (scheduler_app/services/metrics).
EXPORTED = {
    "scheduler_tasks_submitted_total",
    "scheduler_tasks_finished_total",
    "scheduler_task_retries_total",
    "scheduler_tasks",
    "scheduler_queue_depth",
    "scheduler_queue_oldest_age_seconds",
    "scheduler_queue_paused",
    "scheduler_queue_workers",
    "scheduler_dead_letters",
    "scheduler_workers",
    "scheduler_required_workers",
    "scheduler_task_wait_seconds_bucket",
    "scheduler_task_run_seconds_bucket",
    "scheduler_task_run_seconds_count",
    "scheduler_worker_pool_busy",
    "scheduler_worker_pool_processes",
    "scheduler_schedule_lag_seconds_bucket",
    "scheduler_webhook_deliveries_total",
    "scheduler_metrics_ledger_up",
}


def generator():
    spec = importlib.util.spec_from_file_location("dashboards", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_the_sdk_builders_output() -> None:
    rendered = generator().render()
    assert set(rendered) == {"scheduler-overview.json", "scheduler-task-type.json"}
    for name, text in rendered.items():
        assert (COMPOSE_DASHBOARDS / name).read_text() == text, f"run python {GENERATOR}"
        assert (CHART / "dashboards" / name).read_text() == text, f"run python {GENERATOR}"


def test_dashboards_load_into_the_sdk_model_and_query_exported_metrics() -> None:
    from grafana_foundation_sdk.models.dashboard import Dashboard

    for path in COMPOSE_DASHBOARDS.glob("*.json"):
        data = json.loads(path.read_text())
        model = Dashboard.from_json(data)
        assert model.title.startswith("Scheduler") and model.uid
        exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
        assert exprs, path
        used = {m for e in exprs for m in re.findall(r"\b(scheduler_[a-z_]+)\b", e)}
        assert used and used <= EXPORTED, used - EXPORTED
        assert len({p["id"] for p in data["panels"]}) == len(data["panels"])
    task_type = json.loads((COMPOSE_DASHBOARDS / "scheduler-task-type.json").read_text())
    assert "task" in {v["name"] for v in task_type["templating"]["list"]}


def test_sdk_model_rejects_a_broken_dashboard() -> None:
    """Negative control: the model check can fail."""
    from grafana_foundation_sdk.models.dashboard import Dashboard

    data = json.loads((COMPOSE_DASHBOARDS / "scheduler-overview.json").read_text())
    data["panels"] = "not a list"
    with pytest.raises(Exception):  # noqa: B017 - whatever the SDK raises
        Dashboard.from_json(data)


def monitoring_values(**extra) -> dict:
    chart_values = values("monitoring")
    chart_values.update(dashboards={"enabled": True}, prometheusRule={"enabled": True}, **extra)
    return chart_values


def test_chart_ships_dashboards_and_the_compose_alert_rules() -> None:
    docs = render(monitoring_values())
    (configmap,) = [d for d in docs if d["metadata"]["name"].endswith("-dashboards")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    for name in ("scheduler-overview.json", "scheduler-task-type.json"):
        assert json.loads(configmap["data"][name]) == json.loads(
            (COMPOSE_DASHBOARDS / name).read_text()
        )
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    compose_rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == compose_rules["groups"]
    assert (CHART / "files" / "alerts.yml").read_text() == (
        DOCKER / "prometheus" / "alerts.yml"
    ).read_text(), "helm/scheduler/files/alerts.yml is a copy of docker/prometheus/alerts.yml"
    from cloudcoil.models.prometheus_operator.v1 import PrometheusRule

    model = PrometheusRule.model_validate(rule)
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == rule


def test_keda_scaled_object_replaces_the_cpu_hpa() -> None:
    keda = {"enabled": True}
    docs = render({**monitoring_values(), "keda": keda})
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    workers = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    ]
    # KEDA owns the worker count: the Deployment leaves replicas unset (an upgrade keeps it).
    assert "replicas" not in workers[0]["spec"]
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": workers[0]["metadata"]["name"],
    }
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "scheduler_required_workers" in trigger["metadata"]["query"]
    assert set(trigger["metadata"]) == {"serverAddress", "query", "threshold"}
    assert all(isinstance(v, str) for v in trigger["metadata"].values())
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    # The CRD's schema, through the models generated from KEDA's CRDs: strictly, since a field
    # the CRD lacks is lost on the round trip (the misspelt copy is the negative control).
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    def round_trip(doc: dict) -> dict:
        model = ScaledObject.model_validate(doc)
        return model.model_dump(mode="json", by_alias=True, exclude_unset=True)

    assert round_trip(scaled) == scaled
    misspelt = json.loads(json.dumps(scaled))
    misspelt["spec"]["minReplicasCount"] = misspelt["spec"].pop("minReplicaCount")
    assert round_trip(misspelt) != misspelt, "negative control"
    # Never both: the CPU HPA on as well is refused at render time.
    both = values("default")
    both["keda"] = keda
    with pytest.raises(Exception, match="choose one"):
        render(both)
    assert not [d for d in render(values("default")) if d["kind"] == "ScaledObject"]
