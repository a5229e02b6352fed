"""The deployment files are right, not illustrative: Dockerfile, lock files, compose, manifests, CI.

Needs, besides the dev extras: `kubectl` on PATH (for `kubectl kustomize`; GitHub's runners have
it). Without it these tests skip locally and fail in CI (CI=true). The manifests are validated
against the Kubernetes schemas of the oldest supported version and of the newest one known.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from typing_extensions import override

import scripts.rollout_check
from {{ cookiecutter.package_name }}.platform.settings import Settings

from .support import require_tool

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The oldest supported Kubernetes (preStop sleep, matchLabelKeys) and the newest schemas known.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
KUSTOMIZATIONS = ("k8s/base", "k8s/overlays/dev", "k8s/overlays/prod")
GRACE_MARGIN = 5  # seconds between the end of the shutdown budget and the kubelet's SIGKILL
DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

Doc = dict[str, Any]


def answers() -> dict[str, Any]:
    replay = json.loads((PROJECT / ".cookiecutter.json").read_text(encoding="utf-8"))
    return dict(replay["cookiecutter"])


def tool(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / name), *map(str, args)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def kubectl() -> str:
    return require_tool("kubectl", "to render the manifests (`kubectl kustomize`)")


def render(kustomization: str) -> list[Doc]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(PROJECT / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {kustomization: render(kustomization) for kustomization in KUSTOMIZATIONS}


def one(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def seconds(duration: str | int) -> float:
    """A compose duration ("25s", "1m30s", "1h") in seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration.strip())
    assert duration.strip(), "empty duration"
    assert parts is not None, f"not a duration: {duration!r}"
    hours, minutes, secs = (float(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def containers(pod_spec: Doc) -> Iterator[Doc]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


# -- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = tool("hadolint", "--no-color", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    # No rule is silenced without a reason written next to it.
    for line in (PROJECT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        assert "hadolint ignore" not in line or "--" in line.split("hadolint ignore")[1], line


def test_dockerfile_runs_python_as_pid_1_non_root_with_stdlib_healthcheck() -> None:
    text = (PROJECT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    python = answers()["python_version"]
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, flags=re.MULTILINE)
    assert [name for _, name in stages] == ["build", "runtime"]
    # Each FROM names the image itself (dependabot cannot update an image given by an ARG).
    for image, _ in stages:
        assert image.startswith(f"python:{python}-slim-"), image
        assert "$" not in image, image
    package = "{{ cookiecutter.package_name }}"
    assert scripts.rollout_check.dockerfile_command() == ["python", "-m", package]
    runtime = text.split(" AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", runtime, flags=re.MULTILINE)
    assert "uv sync --locked" in text
    healthcheck = re.search(r"^HEALTHCHECK .* CMD (\[.*\])$", runtime, flags=re.MULTILINE)
    assert healthcheck is not None
    command = json.loads(healthcheck.group(1))
    assert command[:2] == ["python", "-c"]
    imports = set(re.findall(r"import ([\w., ]+?);", command[2]))
    assert imports <= {"os, urllib.request"}, imports
    # Nothing secret is baked in, and the shutdown timing comes from the service's defaults.
    env_lines = " ".join(re.findall(r"^ENV (.*)$", text, flags=re.MULTILINE))
    for forbidden in ("PASSWORD", "SECRET", "TOKEN", "DATABASE_URL", "REDIS_URL", "DRAIN_DELAY"):
        assert forbidden not in env_lines


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = (PROJECT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "everything is excluded first, then the build inputs let back in"
    assert "**/.env" in patterns
    assert not any(p.startswith("!") and (".venv" in p or ".env" in p) for p in patterns)


def uv(*args: str) -> subprocess.CompletedProcess[str]:
    """The locked uv of this virtualenv (the dev group pins it), in the project."""
    return tool("uv", *args, "--python", sys.executable)


def test_uv_lock_agrees_with_pyproject() -> None:
    """uv.lock is the one source of every version: `uv lock --locked` refuses any disagreement."""
    result = uv("lock", "--locked")
    hint = "run `make lock` after changing pyproject.toml"
    assert result.returncode == 0, f"{hint}:\n{result.stderr}"


def test_the_tested_virtualenv_is_the_lock() -> None:
    """What these tests run with is exactly uv.lock (runtime, dev and build groups), no more."""
    result = uv("sync", "--locked", "--check")
    hint = "the virtualenv differs from uv.lock (`make install` syncs it)"
    assert result.returncode == 0, f"{hint}:\n{result.stderr}"


def locked_packages() -> dict[str, dict[str, Any]]:
    lock = tomllib.loads((PROJECT / "uv.lock").read_text(encoding="utf-8"))
    return {package["name"]: package for package in lock["package"]}


def runtime_closure() -> set[str]:
    """The packages the image installs: the project's runtime dependencies, transitively."""
    packages = locked_packages()
    project = packages[answers()["service_name"]]
    runtime: set[str] = set()
    pending = [dependency["name"] for dependency in project["dependencies"]]
    while pending:
        name = pending.pop()
        if name not in runtime:
            runtime.add(name)
            pending += [dependency["name"] for dependency in packages[name].get("dependencies", [])]
    return runtime


def test_the_image_installs_the_locked_runtime_dependencies_only() -> None:
    """The Dockerfile's build stage installs from uv.lock: the runtime closure, no dev, no build
    group; the lock pins every one of them with hashes."""
    packages = locked_packages()
    runtime = runtime_closure()
    for name in runtime:
        files = [*packages[name].get("wheels", []), packages[name].get("sdist", {})]
        assert all(file.get("hash", "").startswith("sha256:") for file in files if file), name
    build_tools = {"hatchling", "editables", "grpcio-tools", "mypy-protobuf", "uv", "pytest"}
    assert not runtime & build_tools, runtime & build_tools
    text = (PROJECT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    build_stage = text.split(" AS runtime", 1)[0]
    assert re.search(r"uv sync --locked --no-default-groups\s+--no-install-project", build_stage)
    assert re.search(r"uv sync --locked --only-group build\s+--no-install-project", build_stage)
    assert "bootstrap_uv.py" in build_stage


# -- The dependency chain: audit and bill of materials --------------------------------------------


class FakeOsv(http.server.BaseHTTPRequestHandler):
    """An OSV API on 127.0.0.1 (the audit's --service-url): records the packages it is asked
    about and reports `vulnerable` (a package name) as affected; the real feed is never used."""

    queried: ClassVar[list[tuple[str, str]]] = []
    vulnerable: ClassVar[str] = ""

    @override
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # /v1/querybatch
        queries = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["queries"]
        results: list[dict[str, Any]] = []
        for query in queries:
            name = query["package"]["name"]
            FakeOsv.queried.append((name, query["version"]))
            vulns = [{"id": "GHSA-test-0001", "modified": MODIFIED}]
            results.append({"vulns": vulns} if name == FakeOsv.vulnerable else {})
        self._answer({"results": results})

    def do_GET(self) -> None:  # /v1/vulns/<id>
        affected = {"name": FakeOsv.vulnerable, "ecosystem": "PyPI"}
        ranges = [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999"}]}]
        self._answer(
            {
                "id": "GHSA-test-0001",
                "modified": MODIFIED,
                "summary": "a test advisory",
                "affected": [{"package": affected, "ranges": ranges}],
            }
        )


MODIFIED = "2026-01-01T00:00:00Z"


@pytest.fixture
def fake_osv() -> Iterator[str]:
    FakeOsv.queried, FakeOsv.vulnerable = [], ""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOsv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_make_audit_checks_every_locked_package_and_fails_on_a_finding(fake_osv: str) -> None:
    clean = make("audit", f"ARGS=--service-url {fake_osv}")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    locked = {
        (name, package["version"])
        for name, package in locked_packages().items()
        if name != answers()["service_name"]
    }
    assert set(FakeOsv.queried) == locked  # every package of the lock, as locked, nothing else
    FakeOsv.vulnerable = "aiohttp"
    found = make("audit", f"ARGS=--service-url {fake_osv}")
    assert found.returncode != 0, found.stdout + found.stderr
    assert "GHSA-test-0001" in found.stdout + found.stderr


def test_make_sbom_lists_the_image_runtime_as_locked(tmp_path: Path) -> None:
    result = make("sbom")
    assert result.returncode == 0, result.stdout + result.stderr
    bom = json.loads((PROJECT / "sbom.cdx.json").read_text(encoding="utf-8"))
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.5")
    packages = locked_packages()
    listed = {(c["name"], c["version"]) for c in bom["components"]}
    assert listed == {(name, packages[name]["version"]) for name in runtime_closure()}
    assert all(c["purl"].startswith("pkg:pypi/") for c in bom["components"])


# -- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_render_and_validate_against_kubernetes_schemas(
    rendered: dict[str, list[Doc]], version: str, tmp_path: Path
) -> None:
    for kustomization, docs in rendered.items():
        path = tmp_path / (kustomization.replace("/", "-") + ".yaml")
        path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
        result = tool("kubernetes-validate", "--strict", "--quiet", "-k", version, path)
        assert result.returncode == 0, f"{kustomization} @ {version}:\n{result.stdout}"


def test_manifests_names_are_valid_and_objects_complete(rendered: dict[str, list[Doc]]) -> None:
    for kustomization, docs in rendered.items():
        kinds = sorted(doc["kind"] for doc in docs)
        expected = {
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        }
        assert expected <= set(kinds), (kustomization, kinds)
        for doc in docs:
            name = doc["metadata"]["name"]
            assert len(name) <= 63, (kustomization, name)
            assert DNS_1123_LABEL.fullmatch(name), (kustomization, name)
        deployment = one(docs, "Deployment")
        for container in containers(deployment["spec"]["template"]["spec"]):
            assert DNS_1123_LABEL.fullmatch(container["name"])
            for port in container.get("ports", []):
                assert len(port["name"]) <= 15
    prod = rendered["k8s/overlays/prod"]
    hpa = one(prod, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in one(prod, "Deployment")["spec"], "the autoscaler owns replicas"
    assert one(rendered["k8s/overlays/dev"], "Deployment")["spec"]["replicas"] == 1
    assert one(prod, "ServiceAccount")["automountServiceAccountToken"] is False
    assert one(prod, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_deployment_rolls_without_downtime_and_runs_locked_down(
    rendered: dict[str, list[Doc]],
) -> None:
    settings = answers()
    for docs in rendered.values():
        deployment = one(docs, "Deployment")
        spec = deployment["spec"]
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
        assert spec["minReadySeconds"] > 0
        pod = spec["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for container in containers(pod):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["limits"]["memory"]
        server = pod["containers"][0]
        assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert server["readinessProbe"]["failureThreshold"] == 1
        assert server["readinessProbe"]["periodSeconds"] <= 2
        assert server["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert server["startupProbe"]["httpGet"]["path"] == "/livez"
        ports = {port["name"]: port["containerPort"] for port in server["ports"]}
        expected_ports = {"http": int(settings["http_port"])}
        if settings["use_grpc"] == "yes":
            expected_ports["grpc"] = int(settings["grpc_port"])
        assert ports == {**expected_ports, "admin": int(settings["metrics_port"])}
        # Prometheus scrapes the pods' admin port; the Service publishes only the public ones.
        annotations = spec["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(settings["metrics_port"])
        service_ports = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}
        assert set(service_ports) == set(expected_ports)
        if "grpc" in service_ports:
            assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
        secrets = {
            item["name"]
            for item in server.get("env", [])
            if "secretKeyRef" in item.get("valueFrom", {})
        }
        expected_secrets = set()
        if settings["use_postgres"] == "yes":
            expected_secrets.add("DATABASE_URL")
        if settings["use_redis"] == "yes":
            expected_secrets.add("REDIS_URL")
        assert secrets == expected_secrets
        init = [c["name"] for c in pod.get("initContainers", [])]
        assert init == (["migrate"] if settings["use_postgres"] == "yes" else [])


def test_network_policy_admits_the_admin_port_only_from_one_namespace_selector(
    rendered: dict[str, list[Doc]],
) -> None:
    """The admin port (/metrics, /debug/tasks) from the namespaces one selector names, the same in
    every overlay; the public ports from any. The selector is named in one place, the base's
    networkpolicy.yaml (default: the namespace called `monitoring`)."""
    public = {"http", "grpc"} if answers()["use_grpc"] == "yes" else {"http"}
    admin_from = []
    for kustomization, docs in rendered.items():
        sources: dict[str, list[Any]] = {}
        for rule in one(docs, "NetworkPolicy")["spec"]["ingress"]:
            for port in rule["ports"]:
                sources.setdefault(port["port"], []).append(rule["from"])
        assert set(sources) == public | {"admin"}, kustomization
        [[peer]] = sources["admin"]  # one rule, one peer: no ipBlock, no other namespaces
        assert set(peer) == {"namespaceSelector"}, (kustomization, peer)
        selector = peer["namespaceSelector"]
        assert selector.get("matchLabels") or selector.get("matchExpressions"), kustomization
        admin_from.append(selector)
        for name in public:
            assert sources[name] == [[{"namespaceSelector": {}}]], kustomization
    assert all(selector == admin_from[0] for selector in admin_from), admin_from


# -- The timing invariant ------------------------------------------------------------------------


def test_timing_invariant_holds_in_answers_defaults_dockerfile_compose_and_manifests(
    rendered: dict[str, list[Doc]],
) -> None:
    """DRAIN_DELAY < SHUTDOWN_TIMEOUT; every grace period >= preStop + SHUTDOWN_TIMEOUT + 5 s."""
    settings = answers()
    drain = float(settings["drain_delay_seconds"])
    timeout = float(settings["shutdown_timeout_seconds"])
    assert drain < timeout
    defaults = Settings.model_fields
    assert (defaults["drain_delay"].default, defaults["shutdown_timeout"].default) == (
        drain,
        timeout,
    )

    dockerfile = (PROJECT / "Dockerfile").read_text(encoding="utf-8")
    assert "SHUTDOWN_TIMEOUT=" not in dockerfile
    assert "DRAIN_DELAY=" not in dockerfile
    assert re.search(r"^STOPSIGNAL SIGTERM$", dockerfile, flags=re.MULTILINE)

    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text(encoding="utf-8"))
    service = compose["services"][settings["service_name"]]
    environment = service["environment"]
    assert float(environment["DRAIN_DELAY"]) == drain
    assert float(environment["SHUTDOWN_TIMEOUT"]) == timeout
    assert service["stop_signal"] == "SIGTERM"
    assert seconds(service["stop_grace_period"]) >= timeout + GRACE_MARGIN

    for kustomization, docs in rendered.items():
        config = one(docs, "ConfigMap")["data"]
        config_drain = float(config["DRAIN_DELAY"])
        config_timeout = float(config["SHUTDOWN_TIMEOUT"])
        assert config_drain < config_timeout, kustomization
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        for container in pod["containers"]:
            pre_stop = container.get("lifecycle", {}).get("preStop", {})
            sleep = float(pre_stop.get("sleep", {}).get("seconds", 0))
            assert "exec" not in pre_stop, "no shell in the image; use preStop.sleep"
            grace = pod["terminationGracePeriodSeconds"]
            assert grace >= sleep + config_timeout + GRACE_MARGIN, (kustomization, grace)


# -- Compose and CI ------------------------------------------------------------------------------


def test_compose_file_is_valid_and_orders_the_start() -> None:
    path = PROJECT / "docker-compose.yml"
    result = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)
    assert result.returncode == 0, result.stdout + result.stderr
    settings = answers()
    services = yaml.safe_load(path.read_text(encoding="utf-8"))["services"]
    service = services[settings["service_name"]]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    # Every port is published on the loopback interface only, the admin port too (a scraper or
    # curl on this machine reads /metrics and /debug/tasks; nothing else on the network can).
    ports = [settings["http_port"], settings["metrics_port"]]
    if settings["use_grpc"] == "yes":
        ports.insert(1, settings["grpc_port"])
    assert service["ports"] == [f"127.0.0.1:{port}:{port}" for port in ports]
    assert service["environment"]["ADMIN_PORT"] == str(settings["metrics_port"])
    depends = service.get("depends_on", {})
    expected: dict[str, dict[str, str]] = {}
    if settings["use_postgres"] == "yes":
        expected["postgres"] = {"condition": "service_healthy"}
        expected["migrate"] = {"condition": "service_completed_successfully"}
        assert services["migrate"]["command"] == ["migrate"]
        assert "healthcheck" in services["postgres"]
    if settings["use_redis"] == "yes":
        expected["redis"] = {"condition": "service_healthy"}
        assert "healthcheck" in services["redis"]
    if settings["use_tracing"] == "yes":  # a local trace viewer the spans go to
        expected["jaeger"] = {"condition": "service_started"}
        assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert services["jaeger"]["ports"] == ["127.0.0.1:16686:16686"]
    assert depends == expected
    assert set(services) == {settings["service_name"], *expected}


def test_dependabot_moves_the_lock_the_base_image_and_the_actions() -> None:
    """Weekly updates of uv.lock, of the Dockerfile's base image (named literally in every FROM
    line, which dependabot reads) and of the workflows' actions; the file passes its schema."""
    path = PROJECT / ".github" / "dependabot.yml"
    result = tool("check-jsonschema", "--builtin-schema", "vendor.dependabot", path)
    assert result.returncode == 0, result.stdout + result.stderr
    updates = yaml.safe_load(path.read_text(encoding="utf-8"))["updates"]
    ecosystems = {(update["package-ecosystem"], update["directory"]) for update in updates}
    assert ecosystems == {("uv", "/"), ("docker", "/"), ("github-actions", "/")}
    # The image's Python is the service's (uv.lock and CI agree on it): no weekly PR moves it.
    [docker] = [update for update in updates if update["package-ecosystem"] == "docker"]
    minor_and_major = ["version-update:semver-major", "version-update:semver-minor"]
    assert {"dependency-name": "python", "update-types": minor_and_major} in docker["ignore"]
    assert (PROJECT / "uv.lock").is_file()
    dockerfile = (PROJECT / "Dockerfile").read_text(encoding="utf-8")
    images = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert images, "no FROM line"
    assert all(re.fullmatch(r"[a-z0-9./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", i) for i in images)


def test_ci_workflow_validates_against_the_github_schema() -> None:
    path = PROJECT / ".github" / "workflows" / "ci.yml"
    result = tool("check-jsonschema", "--builtin-schema", "vendor.github-workflows", path)
    assert result.returncode == 0, result.stdout + result.stderr
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    test_job = workflow["jobs"]["test"]
    settings = answers()
    services = set(test_job.get("services", {}))
    assert services == {
        name
        for name, option in (("postgres", "use_postgres"), ("redis", "use_redis"))
        if settings[option] == "yes"
    }
    steps = " ".join(str(step.get("run", "")) for step in test_job["steps"])
    # make install: uv sync --locked; make lint: the lock check, ruff check/format, mypy.
    for command in ("make install", "make lint", ".venv/bin/pytest", "make rollout-check"):
        assert command in steps
    cache = [s for s in test_job["steps"] if str(s.get("uses", "")).startswith("actions/cache")]
    assert len(cache) == 1
    # Advisory: a newer template (cruft check) never fails the run.
    [cruft] = [s for s in test_job["steps"] if "cruft check" in str(s.get("run", ""))]
    assert cruft["continue-on-error"] is True
    assert "hashFiles('uv.lock')" in cache[0]["with"]["key"]
    assert "docker/build-push-action" in json.dumps(workflow["jobs"]["image"])
    chain = workflow["jobs"]["supply-chain"]["steps"]
    runs = [str(step.get("run", "")) for step in chain]
    assert any(run.startswith("make audit") for run in runs)
    assert any(run.startswith("make sbom") for run in runs)
    [upload] = [s for s in chain if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert upload["with"]["path"] == "sbom.cdx.json"
