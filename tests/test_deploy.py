"""Deployment files across answers: they render, validate, adapt to the options, keep the timing.

The generated suite checks its own project in depth (tests/test_deploy*.py, test_rollout.py) for
the answer sets that get a virtualenv; these bake more answer sets, without one: options off,
non-default timings and ports, the longest service name. Needs `kubectl` (for `kubectl kustomize`),
`promtool` (the alert rules) and the validators pinned in uv.lock; `make test` checks
kubectl is there and installs promtool when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import check_ok, cookiecutter_cli, run

KUBERNETES_VERSION = "1.30.0"  # the oldest the manifests support; the generated suite adds 1.37
KUSTOMIZATIONS = ("k8s/base", "k8s/overlays/dev", "k8s/overlays/prod")
GRACE_MARGIN = 5
BIN = Path(sys.executable).parent
DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

ANSWER_SETS: dict[str, dict[str, str]] = {
    "default": {},
    "slow-drain": {
        "service_name": "api",
        "http_port": "8000",
        "grpc_port": "9090",
        "metrics_port": "9100",
        "drain_delay_seconds": "15",
        "shutdown_timeout_seconds": "120",
        "use_tracing": "yes",
    },
    "minimal": {
        "service_name": "tiny-svc",
        "python_version": "3.13",
        "use_grpc": "no",
        "use_postgres": "no",
        "use_redis": "no",
        "use_consumer": "no",
        "use_uvloop": "no",
        "drain_delay_seconds": "0",
        "shutdown_timeout_seconds": "1",
    },
    "no-consumer-long-name": {
        "service_name": "inventory-reconciliation-worker-eu-west1",
        "python_version": "3.11",
        "use_consumer": "no",
        "use_tracing": "yes",
    },
}

Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is needed on PATH to render the manifests (`kubectl kustomize`)")
    return found


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is needed on PATH for the alert rules (scripts/ensure-tools.sh)")
    return found


def answers_of(project: Path) -> dict[str, str]:
    replay = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    return {key: str(value) for key, value in replay["cookiecutter"].items()}


@pytest.fixture(params=list(ANSWER_SETS), scope="module")
def baked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp(f"deploy-{request.param}")
    result = cookiecutter_cli(work / "out", ANSWER_SETS[request.param], config_dir=work / "cfg")
    check_ok(result, f"cookiecutter {ANSWER_SETS[request.param]}")
    (project,) = (work / "out").iterdir()
    return project


RENDERED: dict[Path, dict[str, list[Doc]]] = {}


def render(project: Path) -> dict[str, list[Doc]]:
    """The three kustomizations, rendered once per baked project (callers must not mutate)."""
    if project in RENDERED:
        return RENDERED[project]
    rendered = {}
    for kustomization in KUSTOMIZATIONS:
        result = run([kubectl(), "kustomize", project / kustomization], timeout=120)
        check_ok(result, f"kubectl kustomize {kustomization}")
        rendered[kustomization] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    RENDERED[project] = rendered
    return rendered


def one(docs: list[Doc], kind: str) -> Doc:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return run(
        [BIN / "kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, *paths]
    )


def test_manifests_render_validate_and_have_valid_names(baked: Path, tmp_path: Path) -> None:
    rendered = render(baked)
    paths = []
    for kustomization, docs in rendered.items():
        path = tmp_path / (kustomization.replace("/", "-") + ".yaml")
        path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
        paths.append(path)
        for doc in docs:
            name = doc["metadata"]["name"]
            assert len(name) <= 63, name
            assert DNS_1123_LABEL.fullmatch(name), name
            namespace = doc["metadata"].get("namespace", "")
            assert len(namespace) <= 63, namespace
    check_ok(validate(paths), f"kubernetes-validate {KUBERNETES_VERSION}")


def test_the_validator_rejects_what_kubernetes_would(baked: Path, tmp_path: Path) -> None:
    """The schema check is not vacuous: an unknown field and a wrong type are both refused."""
    deployment = one(render(baked)["k8s/overlays/prod"], "Deployment")
    unknown = json.loads(json.dumps(deployment))
    unknown["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["minReadySeconds"] = "5"
    for name, doc in (("unknown", unknown), ("wrong-type", wrong_type)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        assert validate([path]).returncode != 0, name


def test_timing_invariant_across_answers(baked: Path) -> None:
    """DRAIN_DELAY < SHUTDOWN_TIMEOUT; every grace >= preStop sleep + SHUTDOWN_TIMEOUT + 5 s."""
    answers = answers_of(baked)
    drain = float(answers["drain_delay_seconds"])
    timeout = float(answers["shutdown_timeout_seconds"])
    assert drain < timeout

    settings = (baked / "src" / answers["package_name"] / "platform" / "settings.py").read_text(
        "utf-8"
    )
    assert re.search(rf"drain_delay: float = Field\(\s*default={drain:g},", settings)
    assert re.search(rf"shutdown_timeout: float = Field\(\s*default={timeout:g},", settings)

    dockerfile = (baked / "Dockerfile").read_text(encoding="utf-8")
    assert "DRAIN_DELAY" not in dockerfile.split("ENV ", 1)[1].split("\n\n")[0]
    assert re.search(r"^STOPSIGNAL SIGTERM$", dockerfile, flags=re.MULTILINE)

    compose = yaml.safe_load((baked / "docker-compose.yml").read_text(encoding="utf-8"))
    service = compose["services"][answers["service_name"]]
    assert float(service["environment"]["DRAIN_DELAY"]) == drain
    assert float(service["environment"]["SHUTDOWN_TIMEOUT"]) == timeout
    grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert grace is not None
    assert float(grace.group(1)) >= timeout + GRACE_MARGIN

    for kustomization, docs in render(baked).items():
        config = one(docs, "ConfigMap")["data"]
        assert float(config["DRAIN_DELAY"]) == drain, kustomization
        assert float(config["SHUTDOWN_TIMEOUT"]) == timeout, kustomization
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        for container in pod["containers"]:
            pre_stop = container.get("lifecycle", {}).get("preStop", {})
            sleep = float(pre_stop.get("sleep", {}).get("seconds", 0))
            assert pod["terminationGracePeriodSeconds"] >= sleep + timeout + GRACE_MARGIN


def test_files_adapt_to_the_options(baked: Path) -> None:
    answers = answers_of(baked)
    grpc, postgres, redis, tracing = (
        answers[f"use_{name}"] == "yes" for name in ("grpc", "postgres", "redis", "tracing")
    )
    for kustomization, docs in render(baked).items():
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        server = pod["containers"][0]
        public = {"http", "grpc"} if grpc else {"http"}
        ports = {p["name"]: p["containerPort"] for p in server["ports"]}
        assert set(ports) == public | {"admin"}
        assert ports["admin"] == int(answers["metrics_port"])
        annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == answers["metrics_port"]
        # The admin port is scraped on the pods, never published through the Service.
        service_ports = {p["name"] for p in one(docs, "Service")["spec"]["ports"]}
        assert service_ports == public, kustomization
        assert bool(pod.get("initContainers")) == postgres
        secrets = {e["name"] for e in server.get("env", [])}
        assert secrets == {n for n, on in (("DATABASE_URL", postgres), ("REDIS_URL", redis)) if on}
        check_ingress(docs, grpc, MONITORING)
        egress = {
            port["port"]
            for rule in one(docs, "NetworkPolicy")["spec"]["egress"]
            for port in rule["ports"]
        }
        wanted = {53} | ({5432} if postgres else set()) | ({6379} if redis else set())
        assert egress == wanted | ({4318} if tracing else set())  # OTLP/HTTP
        config = one(docs, "ConfigMap")["data"]
        assert ("GRPC_PORT" in config) == grpc
        assert ("OTEL_EXPORTER_OTLP_ENDPOINT" in config) == tracing

    services = yaml.safe_load((baked / "docker-compose.yml").read_text("utf-8"))["services"]
    expected = {answers["service_name"]}
    expected |= {"postgres", "migrate"} if postgres else set()
    expected |= {"redis"} if redis else set()
    expected |= {"jaeger"} if tracing else set()
    assert set(services) == expected
    # The public ports and the admin port, published on the loopback interface only.
    service = services[answers["service_name"]]
    published = [answers["http_port"], answers["grpc_port"]] if grpc else [answers["http_port"]]
    published.append(answers["metrics_port"])
    assert service["ports"] == [f"127.0.0.1:{port}:{port}" for port in published]
    assert service["environment"]["ADMIN_PORT"] == answers["metrics_port"]

    dockerfile = (baked / "Dockerfile").read_text(encoding="utf-8")
    assert ("proto/" in dockerfile) == grpc
    assert ("hatch_build.py" in dockerfile) == grpc
    assert f"python:{answers['python_version']}-slim-" in dockerfile
    locked = {package["name"] for package in tomllib.loads(lock_text(baked))["package"]}
    assert ("grpcio" in locked) == grpc
    assert ("grpcio-tools" in locked) == grpc  # the stub generator, in the build group
    assert ("asyncpg" in locked) == postgres
    assert ("redis" in locked) == redis
    assert ("opentelemetry-sdk" in locked) == tracing
    assert answers["service_name"] in locked

    workflow = yaml.safe_load((baked / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    job_services = set(workflow["jobs"]["test"].get("services", {}))
    assert job_services == {n for n, on in (("postgres", postgres), ("redis", redis)) if on}


MONITORING = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
"""The documented default of who may reach the admin port (/metrics, /debug/tasks): the namespace
called `monitoring`, by the label Kubernetes puts on every namespace."""


def admitted(docs: list[Doc]) -> dict[str, list[Any]]:
    """Each port of the NetworkPolicy's ingress rules (by name) and the `from` of every rule that
    admits it."""
    sources: dict[str, list[Any]] = {}
    for rule in one(docs, "NetworkPolicy")["spec"]["ingress"]:
        for port in rule["ports"]:
            sources.setdefault(port["port"], []).append(rule["from"])
    return sources


def check_ingress(docs: list[Doc], grpc: bool, admin_from: Doc) -> None:
    """The admin port only from namespaces matching `admin_from`; the public ports from any; the
    admin port is the admin container port."""
    sources = admitted(docs)
    assert sources.pop("admin") == [[{"namespaceSelector": admin_from}]]
    public = {"http", "grpc"} if grpc else {"http"}
    assert sources == {port: [[{"namespaceSelector": {}}]] for port in public}
    [server] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "admin" in {port["name"] for port in server["ports"]}


def test_the_admin_selector_is_one_place_every_overlay_follows(tmp_path: Path) -> None:
    """Naming another monitoring namespace takes one edit (the base's NetworkPolicy): every
    kustomization then admits the admin port from it, and from nothing else."""
    result = cookiecutter_cli(tmp_path / "out", {"service_name": "metered"}, config_dir=tmp_path)
    check_ok(result, "cookiecutter")
    project = tmp_path / "out" / "metered"
    policy = project / "k8s" / "base" / "networkpolicy.yaml"
    text = policy.read_text(encoding="utf-8")
    default = "kubernetes.io/metadata.name: monitoring"
    assert text.count(default) == 1, "the default selector, in one place"
    policy.write_text(text.replace(default, "team.example.com/observability: scrapers"), "utf-8")
    for kustomization, docs in render(project).items():
        other = {"matchLabels": {"team.example.com/observability": "scrapers"}}
        check_ingress(docs, grpc=True, admin_from=other)
        assert "kubernetes.io/metadata.name: monitoring" not in yaml.safe_dump_all(docs), (
            kustomization
        )


def test_readme_security_section_states_the_posture_of_these_answers(baked: Path) -> None:
    """What is exposed where (these ports, the admin selector), what answers and logs say, how
    secrets rotate, the dependency chain: the generated README's security section."""
    answers = answers_of(baked)
    readme = (baked / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]
    text = " ".join(section.split())
    ports = [answers["http_port"], answers["metrics_port"]]
    if answers["use_grpc"] == "yes":
        ports.append(answers["grpc_port"])
        assert "`x-request-id` trailer" in text
    for wanted in (
        *(f"{port}" for port in ports),
        "`DEBUG_TASKS=true`",
        "`kubernetes.io/metadata.name: monitoring`",
        "`X-Request-ID`",
        "never an exception's text",
        "`make audit`",
        "`make sbom`",
        "dependabot",
    ):
        assert wanted in text, wanted
    secrets = answers["use_postgres"] == "yes" or answers["use_redis"] == "yes"
    restart = f"`kubectl rollout restart deployment/{answers['service_name']}`"
    assert (restart in text) == secrets
    assert (f"`{answers['service_name']}-secrets`" in text) == secrets
    policy = (baked / "k8s" / "base" / "networkpolicy.yaml").read_text(encoding="utf-8")
    assert "kubernetes.io/metadata.name: monitoring" in policy


def lock_text(project: Path) -> str:
    return (project / "uv.lock").read_text(encoding="utf-8")


def test_dockerfile_compose_and_workflow_pass_their_linters(baked: Path) -> None:
    check_ok(run([BIN / "hadolint", "--no-color", baked / "Dockerfile"]), "hadolint")
    for schema, path in (
        ("vendor.compose-spec", baked / "docker-compose.yml"),
        ("vendor.github-workflows", baked / ".github" / "workflows" / "ci.yml"),
        ("vendor.dependabot", baked / ".github" / "dependabot.yml"),
    ):
        result = run([BIN / "check-jsonschema", "--builtin-schema", schema, path])
        check_ok(result, f"check-jsonschema {schema} {path.name}")


def test_alert_rules_adapt_to_the_options_and_pass_promtool(baked: Path) -> None:
    """Every alert of the options chosen is shipped, checked, and unit-tested both ways."""
    observability = baked / "observability"
    [group] = yaml.safe_load((observability / "alerts.yaml").read_text("utf-8"))["groups"]
    alerts = {rule["alert"] for rule in group["rules"]}
    expected = {"ShutdownOverBudget", "HttpServerErrors"}
    if answers_of(baked)["use_consumer"] == "yes":
        expected |= {"DeadLettersGrowing", "ConsumerLagging", "ConsumerFailing"}
    assert alerts == expected
    tests = yaml.safe_load((observability / "alerts.test.yaml").read_text("utf-8"))["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for fires in (True, False):
        assert {case["alertname"] for case in cases if bool(case["exp_alerts"]) == fires} == alerts
    check = run([promtool(), "check", "rules", "alerts.yaml"], cwd=observability)
    check_ok(check, "promtool check rules")
    assert f"SUCCESS: {len(alerts)} rules found" in check.stdout, check.stdout
    check_ok(run([promtool(), "test", "rules", "alerts.test.yaml"], cwd=observability), "promtool")
