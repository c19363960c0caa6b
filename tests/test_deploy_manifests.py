"""Static checks of the deployment files: Dockerfile, compose, Kubernetes + KEDA manifests.

No Docker engine or cluster is needed: every Kubernetes manifest is validated OFFLINE against the
Kubernetes OpenAPI schemas that ``kubernetes-validate`` ships (strict: unknown fields fail). KEDA's
CRDs are not among them, so the ScaledObject and TriggerAuthentication are validated against a
structural JSON Schema written here from KEDA's CRD (the fields this project uses, unknown fields
refused), whose HPA ``behavior`` part is Kubernetes' own ``HorizontalPodAutoscalerBehavior``.

Cross-checks tie the files to the code: every ``ROUTING_*`` variable is a field of
:class:`~consumer.settings.Settings`, the values parse into a valid ``Settings``, ports and probe
paths are the service's, and the autoscaling figures obey the rules written beside them.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic_core import PydanticUndefined
from referencing import Registry, Resource

from consumer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.31"  # oldest minor still widely run; newer ones accept the same fields

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"


# --- helpers -------------------------------------------------------------------------------------


def env_name(field: str) -> str:
    return f"ROUTING_{field.upper()}"


SETTINGS_ENV = {env_name(name) for name in Settings.model_fields}
DEFAULT_METRICS_PORT = Settings.model_fields["metrics_port"].default
DEFAULT_SHUTDOWN_TIMEOUT_S = Settings.model_fields["shutdown_timeout_s"].default
# Variables a deployment must set: fields without a default, plus the two whose defaults only
# make sense on a developer's machine (localhost).
REQUIRED_ENV = {
    env_name(name) for name, f in Settings.model_fields.items() if f.default is PydanticUndefined
} | {"ROUTING_KAFKA_BOOTSTRAP_SERVERS", "ROUTING_DATABASE_URL"}


def settings_from_env(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Build Settings exactly as the process would from these environment variables."""
    for name in list(SETTINGS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for _, d in k8s_documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            instr, _, args = line.strip().partition(" ")
            out.append((instr.upper(), args.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr, args in dockerfile_instructions():
        if instr == "FROM":
            result.append([])
        if result:
            result[-1].append((instr, args))
    return result


def dockerfile_args() -> dict[str, str]:
    return dict(
        args.split("=", 1)
        for instr, args in dockerfile_instructions()
        if instr == "ARG" and "=" in args
    )


def image_of(from_args: str) -> str:
    image = from_args.split(maxsplit=1)[0]
    for name, value in dockerfile_args().items():
        image = image.replace(f"${{{name}}}", value)
    return image


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_is_multistage_on_a_pinned_slim_python() -> None:
    built = stages()
    assert len(built) >= 2, "a build stage and a runtime stage"
    for stage in built:
        image = image_of(stage[0][1])
        match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-(bookworm|trixie)", image)
        assert match, f"base image {image!r} must pin python:X.Y.Z-slim-<debian>"
        requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "requires-python"
        ]
        assert (int(match[1]), int(match[2])) >= tuple(
            int(p) for p in requires.removeprefix(">=").split(".")
        )
    assert " AS " in built[0][0][1].upper(), "the build stage is named"


def test_dockerfile_final_stage_is_lean_and_non_root() -> None:
    final = stages()[-1]
    runs = " ".join(args for instr, args in final if instr == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "pip install", "pip wheel"):
        assert tool not in runs, f"the runtime stage must not run {tool!r}"
    copies = [args for instr, args in final if instr == "COPY"]
    assert copies, "the runtime stage copies the built environment"
    assert all(c.startswith("--from=") for c in copies), "only artefacts from the build stage"
    users = [args for instr, args in final if instr == "USER"]
    assert users, "USER is set"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid, so runAsNonRoot can verify it"
    assert int(uid) != 0
    k8s_uid = k8s_object("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert int(uid) == k8s_uid


def test_dockerfile_entrypoint_cmd_expose_healthcheck() -> None:
    final = dict(stages()[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(final["ENTRYPOINT"]) == ["routing-persistence"]
    assert "routing-persistence" in scripts
    assert json.loads(final["CMD"]) == ["run"]
    assert final["EXPOSE"] == str(DEFAULT_METRICS_PORT)
    assert f"ROUTING_METRICS_PORT={DEFAULT_METRICS_PORT}" in final["ENV"]
    assert HEALTH_PATH in final["HEALTHCHECK"]
    assert "curl" not in final["HEALTHCHECK"]
    assert "wget" not in final["HEALTHCHECK"]


def test_dockerfile_copies_only_files_that_exist() -> None:
    for stage in stages():
        for instr, args in stage:
            if instr != "COPY" or args.startswith("--from="):
                continue
            *sources, _target = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: missing in the repository"


def test_dockerfile_build_stage_makes_a_complete_wheel(tmp_path: Path) -> None:
    """Replay the build stage's COPYs into a fresh directory and build the wheel from it, as
    `docker build` would: the wheel must carry the console script, every migration, the Alembic
    files and the JSON Schemas (else `migrate` or `schemas export` break in the image)."""
    build = stages()[0]
    workdir = Path(next(args for instr, args in build if instr == "WORKDIR"))
    context = tmp_path / "context"
    for instr, args in build:
        if instr != "COPY" or args.startswith("--from="):
            continue
        *sources, target = shlex.split(args)
        dest = context / (workdir / target).relative_to(workdir)  # targets are under WORKDIR
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest / origin.name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "w"), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "w").glob("routing_persistence-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "routing-persistence = consumer.cli:main" in archive.read(entry_points).decode()
    migrations = {
        f"migrations/versions/{p.name}" for p in (ROOT / "migrations" / "versions").glob("*.py")
    }
    assert migrations, "the repository has migrations"
    assert migrations <= names
    assert {"migrations/alembic.ini", "migrations/env.py", "migrations/script.py.mako"} <= names
    schemas_json = {f"schemas/json/{p.name}" for p in (ROOT / "schemas" / "json").glob("*.json")}
    assert schemas_json
    assert schemas_json <= names
    assert {"consumer/py.typed", "schemas/py.typed"} <= names


def _healthcheck_argv() -> list[str]:
    check = dict(stages()[-1])["HEALTHCHECK"]
    argv = json.loads(check[check.index("CMD") + 3 :].strip())
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == HEALTH_PATH else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_dockerfile_healthcheck_command_works(health_server: int) -> None:
    """The HEALTHCHECK's own command: 0 against a live /healthz, non-zero when nothing answers."""
    argv = _healthcheck_argv()
    ok = subprocess.run(
        argv,
        env={"ROUTING_METRICS_PORT": str(health_server)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    from tests.conftest import free_port

    down = subprocess.run(
        argv,
        env={"ROUTING_METRICS_PORT": str(free_port())},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert down.returncode != 0


# --- compose -------------------------------------------------------------------------------------


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image")
        assert image, f"{name}: an image (built ones are tagged too)"
        repo, _, tag = image.rpartition(":")
        assert repo, f"{name}: {image!r}"
        assert tag not in ("", "latest"), f"{name}: pin {image!r}"
        if "build" not in service and "routing-persistence" not in image:
            assert re.search(r"\d+\.\d+", tag), f"{name}: pin {image!r} to a version"
    services = compose()["services"]
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["postgres"]["image"].startswith("postgres:15")


def test_compose_routing_variables_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    ours = {n: s for n, s in services.items() if "routing-persistence" in s.get("image", "")}
    assert {"migrate", "consumer"} <= set(ours)
    for name, service in ours.items():
        env = service.get("environment", {})
        routing = {k: v for k, v in env.items() if k.startswith("ROUTING_")}
        assert set(routing) <= SETTINGS_ENV, f"{name}: unknown {set(routing) - SETTINGS_ENV}"
        assert set(routing) >= REQUIRED_ENV, f"{name}: missing {REQUIRED_ENV - set(routing)}"
        settings_from_env(routing, monkeypatch)  # every value parses


def test_compose_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    consumer = services["consumer"]
    assert consumer["command"] == ["run"]
    assert services["migrate"]["command"] == ["migrate"]
    needs = consumer["depends_on"]
    assert needs["migrate"]["condition"] == "service_completed_successfully"
    assert needs["kafka"]["condition"] == "service_healthy"
    settings = settings_from_env(consumer["environment"], monkeypatch)
    port = settings.metrics_port
    assert f"{port}:{port}" in consumer["ports"]
    # The broker advertises what the consumer dials.
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{settings.kafka_bootstrap_servers}" in advertised
    # Kafka's and PostgreSQL's data live on the named volumes, where the images keep them.
    kafka_env = services["kafka"]["environment"]
    assert f"kafka-data:{kafka_env['KAFKA_LOG_DIRS']}" in services["kafka"]["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    # The consumer connects as the least-privilege role that `grants` creates, to `postgres`.
    url = settings.plain_database_url
    assert "@postgres:5432/" in url
    assert url.startswith("postgresql://routing_persistence:")
    grants = " ".join(services["grants"]["command"])
    assert "/sql/grants.sql" in grants
    assert "./sql:/sql:ro" in services["grants"]["volumes"]
    assert (DEPLOY / "sql").is_dir()
    assert services["grants"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    # Grace period above the shutdown timeout (docker stop -> SIGTERM -> finish batch -> commit).
    grace = int(consumer["stop_grace_period"].removesuffix("s"))
    assert grace > settings.shutdown_timeout_s + 10
    # Topics get as many partitions as the KEDA ScaledObject allows replicas.
    partitions = re.search(r"--partitions (\d+)", services["topics"]["command"][0])
    assert partitions
    scaled = k8s_object("ScaledObject")
    assert int(partitions[1]) == int(
        scaled["metadata"]["annotations"]["routing-persistence/partitions-per-topic"]
    )
    for topic in (
        settings.topic_snapshots,
        settings.topic_costs,
        settings.topic_policies,
        settings.topic_dlq,
    ):
        assert topic in services["topics"]["command"][0]


def test_compose_prometheus_scrapes_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    settings = settings_from_env(services["consumer"]["environment"], monkeypatch)
    prom = services["prometheus"]
    assert "./prometheus:/etc/prometheus/routing:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/routing/prometheus.yml" in prom["command"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "routing-persistence")
    assert job["metrics_path"] == METRICS_PATH
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"consumer:{settings.metrics_port}"]
    assert config["rule_files"] == ["/etc/prometheus/routing/*.yaml"]
    # The glob loads the alert rules that sit beside this file (and nothing else of ours).
    rules = sorted((DEPLOY / "prometheus").glob("*.yaml"))
    assert rules, "deploy/prometheus/*.yaml: the alert rules"
    for path in rules:
        assert yaml.safe_load(path.read_text())["groups"], path


def test_compose_grafana_is_provisioned() -> None:
    data = compose()
    grafana = data["services"]["grafana"]
    mount = next(v for v in grafana["volumes"] if v.startswith("./grafana:"))
    dashboards_dir = mount.split(":")[1]
    provider = yaml.safe_load(data["configs"]["grafana-dashboards"]["content"])
    assert provider["providers"][0]["options"]["path"] == dashboards_dir
    datasource = yaml.safe_load(data["configs"]["grafana-datasource"]["content"])
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    # The mounted folder holds the dashboard(s), each valid JSON.
    dashboards = sorted((DEPLOY / "grafana").glob("*.json"))
    assert dashboards, "deploy/grafana/*.json: the dashboard compose provisions"
    for path in dashboards:
        assert json.loads(path.read_text())["panels"]


# --- Kubernetes: schema validation ---------------------------------------------------------------

_DEFS = "/api/_definitions.json#/$defs/"
_KEDA_META = {"$ref": _DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
_HPA_BEHAVIOR = _DEFS + "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "$id": "https://kubernetes.io/api/routing-persistence/scaledobject-keda-v1alpha1.json",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _KEDA_META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "envSourceContainerName": {"type": "string"},
                        },
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "fallback": {
                        "type": "object",
                        "required": ["failureThreshold", "replicas"],
                        "additionalProperties": False,
                        "properties": {
                            "failureThreshold": {"type": "integer", "minimum": 1},
                            "replicas": {"type": "integer", "minimum": 0},
                            "behavior": {
                                "enum": [
                                    "static",
                                    "currentReplicas",
                                    "currentReplicasIfHigher",
                                    "currentReplicasIfLower",
                                ]
                            },
                        },
                    },
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "behavior": {"$ref": _HPA_BEHAVIOR},
                                },
                            },
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "metadata": _STRING_MAP,  # KEDA takes every value as a string
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "useCachedMetrics": {"type": "boolean"},
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "name": {"type": "string"},
                                        "kind": {
                                            "enum": [
                                                "TriggerAuthentication",
                                                "ClusterTriggerAuthentication",
                                            ]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "$id": "https://kubernetes.io/api/routing-persistence/triggerauthentication-keda-v1alpha1.json",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": _KEDA_META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_keda(doc: dict[str, Any]) -> None:
    """Validate a KEDA object against KEDA_SCHEMAS, resolving Kubernetes refs offline."""
    schema_root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    version = max(
        (p for p in schema_root.glob("v*-local-strict")),
        key=lambda p: tuple(int(x) for x in p.name[1:].split("-")[0].split(".")),
    )
    definitions = json.loads((version / "_definitions.json").read_text())
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    schema = KEDA_SCHEMAS[doc["kind"]]
    jsonschema.Draft202012Validator(schema, registry=registry).validate(doc)


def test_every_manifest_validates_offline() -> None:
    kinds = []
    for path, doc in k8s_documents():
        if doc["kind"] == "Kustomization":
            continue
        if doc["apiVersion"].startswith("keda.sh/"):
            validate_keda(doc)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        kinds.append((path.name, doc["kind"]))
    assert {k for _, k in kinds} >= {
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    }


def test_the_validators_reject_a_misspelt_field() -> None:
    """Guard: strict validation refuses unknown fields (else the test above proves little)."""
    deployment = copy.deepcopy(k8s_object("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = copy.deepcopy(k8s_object("ScaledObject"))
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(scaled)
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    behavior["scaleDown"]["stabilisationWindowSeconds"] = 1
    scaled["spec"]["maxReplicaCount"] = scaled["spec"].pop("maxReplicas")
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(scaled)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # Secrets are created out of band; the example only documents their shape.
    assert listed == present - {"secret.example.yaml"}


# --- Kubernetes: cross-checks with the service ---------------------------------------------------


def _pod_env(container: dict[str, Any], secret_name: str | None = None) -> dict[str, str]:
    """The environment a container gets from envFrom (ConfigMap, Secret) and env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(k8s_object("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(k8s_object("Secret", source["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


def test_manifest_routing_variables_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("Deployment", "Job"):
        container = k8s_object(name)["spec"]["template"]["spec"]["containers"][0]
        env = _pod_env(container)
        routing = {k for k in env if k.startswith("ROUTING_")}
        assert routing == set(env), f"{name}: only ROUTING_* variables"
        assert routing <= SETTINGS_ENV, f"{name}: unknown {routing - SETTINGS_ENV}"
        assert routing >= REQUIRED_ENV, f"{name}: missing {REQUIRED_ENV - routing}"
        settings = settings_from_env(env, monkeypatch)
        assert "sslmode=verify-full" in settings.plain_database_url
        if name == "Deployment":
            assert settings.kafka_security_protocol == "SASL_SSL"
            assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
        else:  # migrate never sees the SASL password
            assert "ROUTING_KAFKA_SASL_PASSWORD" not in env
    # Secrets stay in Secrets: no password-bearing variable in the ConfigMap.
    config = k8s_object("ConfigMap")["data"]
    assert "ROUTING_DATABASE_URL" not in config
    assert "ROUTING_KAFKA_SASL_PASSWORD" not in config
    secret = k8s_object("Secret", "routing-persistence")["stringData"]
    assert set(secret) == {"ROUTING_DATABASE_URL", "ROUTING_KAFKA_SASL_PASSWORD"}


def test_deployment_ports_probes_and_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = k8s_object("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = settings_from_env(_pod_env(container), monkeypatch)
    assert container["args"] == ["run"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": settings.metrics_port}
    assert container["livenessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert container["startupProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert container["readinessProbe"]["httpGet"]["path"] == READY_PATH
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("metrics", settings.metrics_port)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    assert annotations["prometheus.io/path"] == METRICS_PATH
    # A worst-case batch is cut at shutdown_timeout_s; the commit and group leave need seconds more.
    assert pod["terminationGracePeriodSeconds"] >= settings.shutdown_timeout_s + 15
    assert settings.shutdown_timeout_s == DEFAULT_SHUTDOWN_TIMEOUT_S
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])
    # The CA bundle the settings point at is mounted.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(settings.kafka_ssl_cafile).startswith(tuple(mounts))
    service = k8s_object("Service")
    assert service["spec"]["ports"][0]["port"] == settings.metrics_port


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_non_root_read_only(kind: str) -> None:
    pod = k8s_object(kind)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
        assert container["image"] == "routing-persistence"  # kustomize's images: sets the tag
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["images"][0]["name"] == "routing-persistence"


def test_migrate_job_runs_migrate_as_the_owner() -> None:
    job = k8s_object("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    assert secrets == ["routing-persistence-migrate"]


def test_selectors_match_the_pods() -> None:
    labels = k8s_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "Service"):
        spec = k8s_object(kind)["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    pdb = k8s_object("PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable")


def test_keda_scaled_object_follows_its_derivation() -> None:
    scaled = k8s_object("ScaledObject")
    spec = scaled["spec"]
    notes = scaled["metadata"]["annotations"]
    deployment = k8s_object("Deployment")
    config = k8s_object("ConfigMap")["data"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == config["ROUTING_GROUP_ID"]
    assert meta["bootstrapServers"] == config["ROUTING_KAFKA_BOOTSTRAP_SERVERS"]
    # lagThreshold = one pod's events/s x the target lag in seconds (see the file's comment).
    per_pod = int(notes["routing-persistence/pod-events-per-second"])
    target_s = int(notes["routing-persistence/target-lag-seconds"])
    assert int(meta["lagThreshold"]) == per_pod * target_s
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["maxReplicaCount"] <= int(notes["routing-persistence/partitions-per-topic"])
    assert meta["limitToPartitionsWithLag"] == "true"
    assert meta.get("allowIdleConsumers", "false") == "false"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] >= 30
    assert spec["cooldownPeriod"] >= 300
    # The scaler authenticates like the consumer does, from a Secret that exists.
    auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(params) >= {"sasl", "username", "password", "tls", "ca"}
    for ref in params.values():
        assert ref["key"] in k8s_object("Secret", ref["name"])["stringData"]
    keda_secret = k8s_object("Secret", params["sasl"]["name"])["stringData"]
    assert keda_secret["sasl"] == "scram_sha512"
    assert keda_secret["username"] == config["ROUTING_KAFKA_SASL_USERNAME"]
