# ruff: noqa: E501 - PromQL reads best unbroken
"""The Grafana dashboards, built with grafana-foundation-sdk's types (the JSON is their output).

    python docker/grafana/dashboards.py      # writes the JSON for compose and the Helm chart

tests/unit/test_dashboards.py checks the committed JSON is exactly what this builds, loads back
into the SDK's Dashboard model, and queries only metrics the platform exports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

ROOT = Path(__file__).resolve().parents[2]
TARGETS = (
    ROOT / "docker" / "grafana" / "provisioning" / "dashboards",
    ROOT / "helm" / "scheduler" / "dashboards",
)
# Ledger-derived series (counts, depths) are the same from every API replica: they are taken
# with max by their own labels before any sum, so two replicas do not count twice.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref)


def series(title: str, unit: str, *targets: prometheus.Dataquery, width: int = 12):
    panel = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).height(8)
    for target in targets:
        panel = panel.with_target(target)
    return panel.span(width)


def single(title: str, expr: str, unit: str = "short", width: int = 4):
    return (
        stat.Panel()
        .title(title)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(4)
        .span(width)
        .with_target(query(expr))
    )


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def queue_variable() -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable("queue")
        .label("Queue")
        .datasource(DATASOURCE)
        .query("label_values(scheduler_queue_depth, queue)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
    )


def overview() -> dashboard.Dashboard:
    q = 'queue=~"$queue"'
    return (
        dashboard.Dashboard("Scheduler: overview")
        .uid("scheduler-overview")
        .tags(["scheduler"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(datasource_variable())
        .with_variable(queue_variable())
        .with_row(dashboard.Row("Now"))
        .with_panel(
            single("Due and waiting", f"sum(max by (queue) (scheduler_queue_depth{{{q}}}))")
        )
        .with_panel(
            single("Running", f'sum(max by (queue) (scheduler_tasks{{{q},status="running"}}))')
        )
        .with_panel(single("Oldest wait", f"max(scheduler_queue_oldest_age_seconds{{{q}}})", "s"))
        .with_panel(single("Dead letters", f"sum(max by (queue) (scheduler_dead_letters{{{q}}}))"))
        .with_panel(single("Workers online", 'max(scheduler_workers{status="online"})'))
        .with_panel(
            single("Workers needed", f"sum(max by (queue) (scheduler_required_workers{{{q}}}))")
        )
        .with_row(dashboard.Row("Throughput and failures"))
        .with_panel(
            series(
                "Submitted and finished (per second)",
                "ops",
                query(
                    f"sum(max by (queue, task) (rate(scheduler_tasks_submitted_total{{{q}}}[$__rate_interval])))",
                    "submitted",
                ),
                query(
                    "sum by (status) (max by (queue, task, status) (rate(scheduler_tasks_finished_total"
                    f"{{{q}}}[$__rate_interval])))",
                    "{{status}}",
                    "B",
                ),
            )
        )
        .with_panel(
            series(
                "Failures and retries (per second)",
                "ops",
                query(
                    "sum by (task) (max by (queue, task) (rate(scheduler_tasks_finished_total"
                    f'{{{q},status="failed"}}[$__rate_interval])))',
                    "failed {{task}}",
                ),
                query(
                    f"sum by (task) (max by (queue, task) (rate(scheduler_task_retries_total{{{q}}}[$__rate_interval])))",
                    "retried {{task}}",
                    "B",
                ),
            )
        )
        .with_row(dashboard.Row("Waiting"))
        .with_panel(
            series(
                "Wait, due to started (p50, p95)",
                "s",
                query(
                    "histogram_quantile(0.5, sum by (le, queue) (rate("
                    f"scheduler_task_wait_seconds_bucket{{{q}}}[$__rate_interval])))",
                    "p50 {{queue}}",
                ),
                query(
                    "histogram_quantile(0.95, sum by (le, queue) (rate("
                    f"scheduler_task_wait_seconds_bucket{{{q}}}[$__rate_interval])))",
                    "p95 {{queue}}",
                    "B",
                ),
            )
        )
        .with_panel(
            series(
                "Queue depth and oldest wait",
                "short",
                query(f"max by (queue) (scheduler_queue_depth{{{q}}})", "depth {{queue}}"),
                query(
                    f"max by (queue) (scheduler_queue_oldest_age_seconds{{{q}}})",
                    "oldest s {{queue}}",
                    "B",
                ),
            )
        )
        .with_row(dashboard.Row("Dead letters and workers"))
        .with_panel(
            series(
                "Dead letters",
                "short",
                query(f"max by (queue) (scheduler_dead_letters{{{q}}})", "{{queue}}"),
            )
        )
        .with_panel(
            series(
                "Workers and pool usage",
                "short",
                query("max by (status) (scheduler_workers)", "{{status}}"),
                query("sum(scheduler_worker_pool_busy)", "busy processes", "B"),
                query("sum(scheduler_worker_pool_processes)", "pool processes", "C"),
                query(
                    f"max by (queue) (scheduler_required_workers{{{q}}})", "needed {{queue}}", "D"
                ),
            )
        )
    )


def task_type() -> dashboard.Dashboard:
    t = 'task=~"$task"'
    return (
        dashboard.Dashboard("Scheduler: task type")
        .uid("scheduler-task-type")
        .tags(["scheduler"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(datasource_variable())
        .with_variable(
            dashboard.QueryVariable("task")
            .label("Task type")
            .datasource(DATASOURCE)
            .query("label_values(scheduler_tasks_submitted_total, task)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
        .with_panel(
            series(
                "$task: finished by status (per second)",
                "ops",
                query(
                    f"sum by (status) (max by (queue, status) (rate(scheduler_tasks_finished_total{{{t}}}"
                    "[$__rate_interval])))",
                    "{{status}}",
                ),
                query(
                    f"sum(max by (queue) (rate(scheduler_task_retries_total{{{t}}}[$__rate_interval])))",
                    "retries",
                    "B",
                ),
            )
        )
        .with_panel(
            series(
                "$task: run time (p50, p95, p99)",
                "s",
                *(
                    query(
                        f"histogram_quantile({p}, sum by (le) (rate("
                        f"scheduler_task_run_seconds_bucket{{{t}}}[$__rate_interval])))",
                        f"p{round(p * 100)}",
                        ref,
                    )
                    for p, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
                ),
            )
        )
        .with_panel(
            series(
                "$task: attempts per second by queue",
                "ops",
                query(
                    f"sum by (queue) (rate(scheduler_task_run_seconds_count{{{t}}}"
                    "[$__rate_interval]))",
                    "{{queue}}",
                ),
            )
        )
        .with_panel(
            series(
                "$task: share of failures",
                "percentunit",
                query(
                    f'sum(rate(scheduler_tasks_finished_total{{{t},status="failed"}}'
                    f"[$__rate_interval])) / sum(rate(scheduler_tasks_finished_total{{{t}}}"
                    "[$__rate_interval]))",
                    "failed",
                ),
            )
        )
    )


DASHBOARDS = {"scheduler-overview.json": overview, "scheduler-task-type.json": task_type}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard (panel ids numbered, as Grafana wants)."""
    out = {}
    for name, build in DASHBOARDS.items():
        model = json.loads(json.dumps(build().build(), cls=JSONEncoder))
        for number, panel in enumerate(model["panels"], start=1):
            panel["id"] = number
        out[name] = json.dumps(model, indent=2, sort_keys=True) + "\n"
    return out


def main() -> int:
    for target in TARGETS:
        target.mkdir(parents=True, exist_ok=True)
        for name, text in render().items():
            (target / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
