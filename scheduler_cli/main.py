"""`scheduler`: the client CLI of DESIGN.md §7.

Exit codes: 0 success (with --wait: the task succeeded), 1 the waited task failed or was
cancelled (or the wait timed out), 2 usage error, 3 API error (an error answer, or the API
cannot be reached or the session is gone). ``--json`` prints the API's JSON and nothing else on
stdout; messages and the --wait progress go to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click
import yaml

from scheduler_cli import __version__, render, store
from scheduler_cli.client import Api, ApiError, send
from scheduler_cli.client import login as api_login

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_API = 3
# tests/e2e/test_cli.py's negative control: --wait exits 0 whatever the task ended as.
NEGATIVE_CONTROL = os.environ.get("SCHEDULER_CLI_NEGATIVE_CONTROL") == "1"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "upstream_failed", "skipped"})
TASK_COLUMNS = ["id", "task", "status", "queue", "priority", "attempts", "created_at"]


class JsonValue(click.ParamType):
    """A JSON argument; `kind` (list or dict) when given is required."""

    name = "JSON"

    def __init__(self, kind: type | None = None) -> None:
        self.kind = kind

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(f"not valid JSON: {exc}", param, ctx)
        if self.kind is not None and not isinstance(parsed, self.kind):
            self.fail(f"must be a JSON {'array' if self.kind is list else 'object'}", param, ctx)
        return parsed


class Group(click.Group):
    """Turns an API error anywhere below into a message on stderr and exit code 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            render.err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
            raise click.exceptions.Exit(EXIT_API) from None
        except store.StoreError as exc:
            render.err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
            raise click.exceptions.Exit(EXIT_API) from None


def api_command(group: click.Group, name: str | None = None, **kwargs: Any) -> Callable:
    """A command with --json that receives an Api of the chosen profile (and as_json)."""

    def decorate(func: Callable) -> Callable:
        @group.command(name, **kwargs)
        @click.option("--json", "as_json", is_flag=True, help="Print the API's JSON only.")
        @click.pass_context
        @functools.wraps(func)
        def command(ctx: click.Context, *args: Any, **params: Any) -> Any:
            return func(Api(ctx.find_root().obj["profile"]), *args, **params)

        return command

    return decorate


def show(value: Any, as_json: bool, title: str | None = None) -> None:
    if as_json:
        render.emit_json(value)
    elif isinstance(value, dict):
        render.record(value, title)
    elif value is not None:
        render.out.print(value)


def show_page(page: dict, as_json: bool, columns: list[str], title: str) -> None:
    if as_json:
        render.emit_json(page)
        return
    render.table(page.get("items", []), columns, title)
    if page.get("next_cursor"):
        render.err.print(f"more: --cursor {page['next_cursor']}", highlight=False)


def path_id(value: str) -> str:
    return quote(value, safe="")


def read_document(source: Any) -> Any:
    """JSON (or YAML) from an open file, '-' being stdin."""
    text = source.read()
    try:
        return json.loads(text)
    except ValueError:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"neither JSON nor YAML: {exc}") from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--profile",
    default=None,
    help=f"Stored session to use (default: ${store.PROFILE_ENV}, else the last login).",
)
@click.version_option(__version__, prog_name="scheduler")
@click.pass_context
def cli(ctx: click.Context, profile: str | None) -> None:
    """Client of the job scheduler's HTTP API."""
    ctx.obj = {"profile": profile}


# --- session ---------------------------------------------------------------------------------


@cli.command()
@click.option("--url", required=True, help="The API's base URL, e.g. http://127.0.0.1:8000")
@click.option("--client-id", required=True)
@click.option("--client-secret", required=True, prompt=True, hide_input=True)
@click.option("--profile", "login_profile", default=None, help="Name to store the session as.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON only.")
@click.pass_context
def login(ctx, url, client_id, client_secret, login_profile, as_json):
    """Get a token and keep it in the user's config dir (refreshed when it expires)."""
    profile = login_profile or ctx.obj["profile"]
    tokens = api_login(url, client_id, client_secret, profile)
    if as_json:
        render.emit_json(tokens)
    else:
        name = store.profile_name(profile, store.load())
        render.err.print(
            f"logged in to {url} as {client_id} (profile {name!r}, {store.config_path()})",
            highlight=False,
        )


@cli.command()
@click.pass_context
def logout(ctx):
    """Revoke the stored tokens and forget the session."""
    api = Api(ctx.obj["profile"])
    for token in (api.session["refresh_token"], api.session["access_token"]):
        with contextlib.suppress(ApiError):
            bearer = {"Authorization": f"Bearer {token}"}
            send("POST", f"{api.url}/api/v1/auth/revoke", headers=bearer)
    data = store.load()
    data["profiles"].pop(api.profile, None)
    if data.get("current") == api.profile:
        data["current"] = None
    store.save(data)
    render.err.print(f"logged out of profile {api.profile!r}", highlight=False)


# --- tasks -----------------------------------------------------------------------------------


def wait_for(api: Api, task_id: str, timeout: float | None, interval: float = 0.5) -> dict:
    """Poll the task until it is terminal, showing its status; the last task read."""
    started = time.monotonic()
    last = None
    with render.err.status(f"{task_id}: waiting") as status:
        while True:
            task = api.get(f"/api/v1/tasks/{path_id(task_id)}")
            key = (task["status"], task.get("attempts"))
            if key != last:
                elapsed = time.monotonic() - started
                render.err.print(
                    f"{elapsed:6.1f}s  {task['status']}  attempt {task.get('attempts', 0)}",
                    highlight=False,
                )
                last = key
            status.update(f"{task_id}: {task['status']} (attempt {task.get('attempts', 0)})")
            if task["status"] in TERMINAL:
                return task
            if timeout is not None and time.monotonic() - started > timeout:
                render.err.print(f"still {task['status']} after {timeout:g} s", highlight=False)
                return task
            time.sleep(interval)


@api_command(cli)
@click.argument("task", required=False)
@click.option("--args", "args_", type=JsonValue(list), help="Positional arguments (JSON array).")
@click.option("--kwargs", type=JsonValue(dict), help="Keyword arguments (JSON object).")
@click.option("--retry", type=JsonValue(dict), help='e.g. {"max_retries": 3, "backoff": 1}')
@click.option("--delay", type=float, help="Seconds to wait before it runs.")
@click.option("--run-at", help="ISO 8601 instant to run at.")
@click.option("--priority", type=int, help="0..9, higher runs first.")
@click.option("--queue")
@click.option("--timeout", type=float, help="Time limit of an attempt, seconds.")
@click.option("--idempotency-key")
@click.option("--notify", type=JsonValue(dict), help='e.g. {"webhook": "https://..."}')
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--file", "source", type=click.File("r"), help="The task body as JSON, '-' stdin.")
@click.option("--wait", is_flag=True, help="Wait until it finishes; exit 0 only on success.")
@click.option("--wait-timeout", type=float, help="Give up waiting after this many seconds.")
def submit(api, task, args_, kwargs, retry, delay, run_at, priority, queue, timeout,
           idempotency_key, notify, tags, source, wait, wait_timeout, as_json):  # fmt: skip
    """Submit a task of type TASK (or the body in --file; flags override its fields)."""
    body = read_document(source) if source else {}
    if not isinstance(body, dict):
        raise click.BadParameter("the task body must be a JSON object", param_hint="--file")
    if delay is not None and run_at is not None:
        raise click.UsageError("--delay and --run-at are exclusive")
    fields = {
        "task": task,
        "args": args_,
        "kwargs": kwargs,
        "retry": retry,
        "delay": delay,
        "run_at": run_at,
        "priority": priority,
        "queue": queue,
        "timeout": timeout,
        "idempotency_key": idempotency_key,
        "notify": notify,
        "tags": list(tags) or None,
    }
    body.update({key: value for key, value in fields.items() if value is not None})
    if not body.get("task"):
        raise click.UsageError("TASK is required (or a body with 'task' in --file)")
    created = api.post("/api/v1/tasks", body)
    if not wait:
        show(created, as_json, "task")
        return
    if not as_json:
        render.err.print(f"submitted {created['id']} ({created['task']})", highlight=False)
    final = wait_for(api, created["id"], wait_timeout)
    show(final, as_json, "task")
    if final["status"] != "succeeded" and not NEGATIVE_CONTROL:
        raise click.exceptions.Exit(EXIT_FAILED)


@api_command(cli)
@click.argument("task_id")
def get(api, task_id, as_json):
    """Show a task."""
    show(api.get(f"/api/v1/tasks/{path_id(task_id)}"), as_json, "task")


@api_command(cli, "list")
@click.option("--status", "statuses", multiple=True, help="A status (repeatable, or a,b).")
@click.option("--task")
@click.option("--queue")
@click.option("--tag")
@click.option("--workflow-id")
@click.option("--schedule-id")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--cursor")
def list_tasks(api, statuses, task, queue, tag, workflow_id, schedule_id, limit, cursor, as_json):
    """List tasks, newest first."""
    page = api.get(
        "/api/v1/tasks",
        status=",".join(statuses) or None,
        task=task,
        queue=queue,
        tag=tag,
        workflow_id=workflow_id,
        schedule_id=schedule_id,
        limit=limit,
        cursor=cursor,
    )
    show_page(page, as_json, TASK_COLUMNS, "tasks")


@api_command(cli)
@click.argument("task_id")
def events(api, task_id, as_json):
    """A task's timeline, oldest first."""
    items = api.get(f"/api/v1/tasks/{path_id(task_id)}/events")
    if as_json:
        render.emit_json(items)
    else:
        render.table(items, ["at", "status", "attempt", "worker", "detail"], "events")


@api_command(cli)
@click.argument("task_id")
def explain(api, task_id, as_json):
    """Why a task is not running (or not finished) right now."""
    answer = api.get(f"/api/v1/tasks/{path_id(task_id)}/explain")
    if as_json:
        render.emit_json(answer)
        return
    render.out.print(f"status: {answer.get('status')}", highlight=False)
    reasons = [
        {
            "code": r.get("code"),
            "message": r.get("message"),
            "evidence": {k: v for k, v in r.items() if k not in ("code", "message")} or None,
        }
        for r in answer.get("reasons", [])
    ]
    render.table(reasons, ["code", "message", "evidence"], "reasons")


@api_command(cli)
@click.argument("task_id")
def cancel(api, task_id, as_json):
    """Cancel a task (exit 3 with the API's 409 when it already finished)."""
    show(api.post(f"/api/v1/tasks/{path_id(task_id)}/cancel"), as_json, "task")


@api_command(cli, "task-types")
def task_types(api, as_json):
    """The registered task types."""
    answer = api.get("/api/v1/task-types")
    if as_json:
        render.emit_json(answer)
        return
    items = answer.get("items", answer) if isinstance(answer, dict) else answer
    rows = [item if isinstance(item, dict) else {"name": item} for item in items]
    columns = list(rows[0]) if rows else ["name"]
    render.table(rows, columns, "task types")


# --- dead letters ----------------------------------------------------------------------------


@cli.group(cls=Group)
def dlq():
    """Dead letters (operator)."""


def dlq_filters(func: Callable) -> Callable:
    for option in reversed(
        [
            click.option("--task"),
            click.option("--queue"),
            click.option("--error-type"),
            click.option("--since", help="ISO 8601: failed at or after."),
        ]
    ):
        func = option(func)
    return func


def dlq_filter(task, queue, error_type, since) -> dict[str, Any]:
    given = {"task": task, "queue": queue, "error_type": error_type, "since": since}
    return {key: value for key, value in given.items() if value is not None}


DLQ_COLUMNS = ["id", "task", "queue", "error_type", "attempts", "failed_at", "replayed_task_id"]


@api_command(dlq, "list")
@dlq_filters
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--cursor")
def dlq_list(api, task, queue, error_type, since, limit, cursor, as_json):
    """List dead letters, newest failure first."""
    params = dlq_filter(task, queue, error_type, since)
    page = api.get("/api/v1/dlq", limit=limit, cursor=cursor, **params)
    show_page(page, as_json, DLQ_COLUMNS, "dead letters")


@api_command(dlq, "show")
@click.argument("dead_letter_id")
def dlq_show(api, dead_letter_id, as_json):
    """A dead letter with its traceback."""
    letter = api.get(f"/api/v1/dlq/{path_id(dead_letter_id)}")
    if as_json:
        render.emit_json(letter)
        return
    traceback = letter.pop("traceback", None)
    render.record(letter, "dead letter")
    if traceback:
        render.out.print(traceback, highlight=False, markup=False)


@api_command(dlq, "replay")
@click.argument("ids", nargs=-1)
@dlq_filters
@click.option("--dry-run", is_flag=True, help="Only count what would be replayed.")
def dlq_replay(api, ids, task, queue, error_type, since, dry_run, as_json):
    """Replay dead letters: IDs, a filter, or both (the ids the filter matches)."""
    filters = dlq_filter(task, queue, error_type, since)
    if not ids and not filters:
        raise click.UsageError("give dead letter IDs or a filter (--task, --queue, ...)")
    if len(ids) == 1 and not filters and not dry_run:
        show(api.post(f"/api/v1/dlq/{path_id(ids[0])}/replay"), as_json, "replayed as")
        return
    body: dict[str, Any] = {"dry_run": dry_run}
    if ids:
        body["ids"] = list(ids)
    if filters:
        body["filter"] = filters
    result = api.post("/api/v1/dlq/replay", body)
    if as_json:
        render.emit_json(result)
    else:
        verb = "would replay" if dry_run else "replayed"
        render.out.print(f"{verb} {result['count']}", highlight=False)
        for task_id in result.get("task_ids", []):
            render.out.print(task_id, highlight=False)


@api_command(dlq, "purge")
@dlq_filters
@click.option("--all", "everything", is_flag=True, help="Purge every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(api, task, queue, error_type, since, everything, yes, as_json):
    """Delete the dead letters matching a filter (or --all)."""
    filters = dlq_filter(task, queue, error_type, since)
    if not filters and not everything:
        raise click.UsageError("give a filter (--task, --queue, --error-type, --since) or --all")
    if not yes:
        click.confirm(f"purge dead letters matching {filters or 'everything'}?", abort=True)
    result = api.post("/api/v1/dlq/purge", {"filter": filters})
    if as_json:
        render.emit_json(result)
    else:
        render.out.print(f"purged {result['count']}", highlight=False)


# --- workflows -------------------------------------------------------------------------------


@cli.group(cls=Group)
def workflow():
    """Workflows (DAGs of tasks)."""


def show_workflow(value: dict, as_json: bool) -> None:
    if as_json:
        render.emit_json(value)
        return
    nodes = value.get("nodes") or {}
    render.record({k: v for k, v in value.items() if k != "nodes"}, "workflow")
    if nodes:
        rows = [{"node": name, **node} for name, node in nodes.items()]
        render.table(rows, ["node", "task_id", "status"], "nodes")


@api_command(workflow, "submit")
@click.argument("source", type=click.File("r"))
def workflow_submit(api, source, as_json):
    """Submit the workflow in SOURCE (JSON or YAML file, '-' for stdin)."""
    body = read_document(source)
    if not isinstance(body, dict):
        raise click.BadParameter("the workflow must be a mapping", param_hint="SOURCE")
    show_workflow(api.post("/api/v1/workflows", body), as_json)


@api_command(workflow, "get")
@click.argument("workflow_id")
def workflow_get(api, workflow_id, as_json):
    """Show a workflow and its nodes."""
    show_workflow(api.get(f"/api/v1/workflows/{path_id(workflow_id)}"), as_json)


@api_command(workflow, "list")
@click.option("--status", "statuses", multiple=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--cursor")
def workflow_list(api, statuses, limit, cursor, as_json):
    """List workflows, newest first."""
    page = api.json(
        "GET",
        "/api/v1/workflows",
        params=[("status", s) for s in statuses]
        + [("limit", limit)]
        + ([("cursor", cursor)] if cursor else []),
    )
    show_page(page, as_json, ["id", "name", "status", "created_at", "finished_at"], "workflows")


@api_command(workflow, "cancel")
@click.argument("workflow_id")
def workflow_cancel(api, workflow_id, as_json):
    """Cancel a workflow's unfinished nodes."""
    show_workflow(api.post(f"/api/v1/workflows/{path_id(workflow_id)}/cancel"), as_json)


@api_command(workflow, "retry")
@click.argument("workflow_id")
def workflow_retry(api, workflow_id, as_json):
    """Run again what failed, keep what succeeded."""
    show_workflow(api.post(f"/api/v1/workflows/{path_id(workflow_id)}/retry"), as_json)


@api_command(workflow, "graph")
@click.argument("workflow_id")
def workflow_graph(api, workflow_id, as_json):
    """The workflow as a Mermaid flowchart (--json: {"id", "mermaid"})."""
    text = api.request("GET", f"/api/v1/workflows/{path_id(workflow_id)}/graph").text
    if as_json:
        render.emit_json({"id": workflow_id, "mermaid": text})
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


# --- schedules -------------------------------------------------------------------------------


@cli.group(cls=Group)
def schedule():
    """Recurring schedules (cron or interval)."""


SCHEDULE_COLUMNS = ["id", "name", "task", "cron", "interval", "enabled", "next_run_at"]


@api_command(schedule, "create")
@click.option("--file", "source", type=click.File("r"), help="The schedule as JSON, '-' stdin.")
@click.option("--name")
@click.option("--task")
@click.option("--cron", help="e.g. '*/5 * * * *'")
@click.option("--interval", type=float, help="Seconds between firings.")
@click.option("--timezone")
@click.option("--args", "args_", type=JsonValue(list))
@click.option("--kwargs", type=JsonValue(dict))
@click.option("--queue")
@click.option("--priority", type=int)
@click.option("--overlap", type=click.Choice(["allow", "skip", "buffer_one"]))
@click.option("--catchup", type=click.Choice(["none", "last", "all"]))
@click.option("--disabled", is_flag=True, help="Create it paused.")
def schedule_create(api, source, name, task, cron, interval, timezone, args_, kwargs, queue,
                    priority, overlap, catchup, disabled, as_json):  # fmt: skip
    """Create a schedule from --file and/or flags (flags override the file)."""
    body = read_document(source) if source else {}
    if not isinstance(body, dict):
        raise click.BadParameter("the schedule must be a JSON object", param_hint="--file")
    if cron is not None and interval is not None:
        raise click.UsageError("--cron and --interval are exclusive")
    fields = {
        "name": name,
        "task": task,
        "cron": cron,
        "interval": interval,
        "timezone": timezone,
        "args": args_,
        "kwargs": kwargs,
        "queue": queue,
        "priority": priority,
        "overlap": overlap,
        "catchup": catchup,
        "enabled": False if disabled else None,
    }
    body.update({key: value for key, value in fields.items() if value is not None})
    if not body.get("name") or not body.get("task"):
        raise click.UsageError("--name and --task are required (or in --file)")
    show(api.post("/api/v1/schedules", body), as_json, "schedule")


@api_command(schedule, "list")
@click.option("--task")
@click.option("--enabled/--disabled", default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--cursor")
def schedule_list(api, task, enabled, limit, cursor, as_json):
    """List schedules."""
    flag = None if enabled is None else str(enabled).lower()
    page = api.get("/api/v1/schedules", task=task, enabled=flag, limit=limit, cursor=cursor)
    show_page(page, as_json, SCHEDULE_COLUMNS, "schedules")


@api_command(schedule, "get")
@click.argument("schedule_id")
def schedule_get(api, schedule_id, as_json):
    """Show a schedule."""
    show(api.get(f"/api/v1/schedules/{path_id(schedule_id)}"), as_json, "schedule")


@api_command(schedule, "pause")
@click.argument("schedule_id")
def schedule_pause(api, schedule_id, as_json):
    """Pause a schedule."""
    show(api.post(f"/api/v1/schedules/{path_id(schedule_id)}/pause"), as_json, "schedule")


@api_command(schedule, "resume")
@click.argument("schedule_id")
def schedule_resume(api, schedule_id, as_json):
    """Resume a schedule from its next slot."""
    show(api.post(f"/api/v1/schedules/{path_id(schedule_id)}/resume"), as_json, "schedule")


@api_command(schedule, "trigger")
@click.argument("schedule_id")
def schedule_trigger(api, schedule_id, as_json):
    """Fire a schedule once now, paused or not."""
    show(api.post(f"/api/v1/schedules/{path_id(schedule_id)}/trigger"), as_json, "fired")


@api_command(schedule, "delete")
@click.argument("schedule_id")
def schedule_delete(api, schedule_id, as_json):
    """Delete a schedule."""
    api.request("DELETE", f"/api/v1/schedules/{path_id(schedule_id)}")
    if not as_json:
        render.err.print(f"deleted {schedule_id}", highlight=False)


# --- workers and queues ----------------------------------------------------------------------


@cli.group(cls=Group)
def workers():
    """Workers (operator)."""


WORKER_COLUMNS = [
    *("name", "status", "queues", "concurrency", "active", "processed", "last_heartbeat")
]


@api_command(workers, "list")
def workers_list(api, as_json):
    """List workers."""
    show_page(api.get("/api/v1/workers"), as_json, WORKER_COLUMNS, "workers")


@api_command(workers, "pause")
@click.argument("name")
def workers_pause(api, name, as_json):
    """Pause a worker (stored: survives its restart)."""
    show(api.post(f"/api/v1/workers/{path_id(name)}/pause"), as_json, "worker")


@api_command(workers, "resume")
@click.argument("name")
def workers_resume(api, name, as_json):
    """Resume a worker."""
    show(api.post(f"/api/v1/workers/{path_id(name)}/resume"), as_json, "worker")


@api_command(workers, "scale")
@click.argument("name")
@click.argument("concurrency", type=click.IntRange(min=1))
def workers_scale(api, name, concurrency, as_json):
    """Set a worker's pool size (stored)."""
    body = {"concurrency": concurrency}
    show(api.post(f"/api/v1/workers/{path_id(name)}/scale", body), as_json, "worker")


@cli.group(cls=Group)
def queues():
    """Queues (operator)."""


QUEUE_COLUMNS = ["name", "depth", "scheduled", "running", "paused", "oldest_age_seconds", "workers"]


@api_command(queues, "list")
def queues_list(api, as_json):
    """List queues with their depth and state."""
    show_page(api.get("/api/v1/queues"), as_json, QUEUE_COLUMNS, "queues")


@api_command(queues, "pause")
@click.argument("name")
def queues_pause(api, name, as_json):
    """Pause a queue cluster-wide (submissions are still accepted)."""
    show(api.post(f"/api/v1/queues/{path_id(name)}/pause"), as_json, "queue")


@api_command(queues, "resume")
@click.argument("name")
def queues_resume(api, name, as_json):
    """Resume a queue."""
    show(api.post(f"/api/v1/queues/{path_id(name)}/resume"), as_json, "queue")


def main() -> None:
    cli(prog_name="scheduler")


if __name__ == "__main__":
    main()
