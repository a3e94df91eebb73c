"""The production compose file and its Dockerfiles, checked without a Docker engine.

docker-compose.yml is parsed with PyYAML and compose's ``${VAR:-default}``
interpolation is resolved to the defaults, so these tests see what a plain
``docker compose up`` would run.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from streams.settings import Settings, TopicsSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
WORKER_DOCKERFILE = ROOT / "Dockerfile"
TRITON_DOCKERFILE = ROOT / "deploy" / "docker" / "triton.Dockerfile"
DEPLOY_README = ROOT / "deploy" / "docker" / "README.md"

WORKERS = ("worker-0", "worker-1")  # replicas of one app id, one consumer group
REQUIRED_SERVICES = {"kafka", "kafka-init", "triton", "etcd", "minio", "milvus", "attu", "prometheus", "grafana",
                     *WORKERS}
# Long-running services allowed to go without a healthcheck: nothing waits on them.
NO_HEALTHCHECK_OK = {"attu"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}, ${NAME:+alt}, ${NAME+alt}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


def resolve(value: str) -> str:
    """Compose's interpolation with an empty environment: defaults win, ``$$`` is a literal ``$``."""
    parts = value.split("$$")

    def sub(m: re.Match[str]) -> str:
        op, arg = m.group("op"), m.group("arg") or ""
        return arg if op in (":-", "-") else ""

    return "$".join(INTERPOLATION.sub(sub, p) for p in parts)


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(raw: str) -> dict:
    doc = yaml.safe_load(raw)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def resolved_env(service: dict) -> dict[str, str]:
    return {k: resolve(v) for k, v in env_of(service).items()}


def published_ports(service: dict) -> dict[int, int]:
    """host port -> container port, for short ("[ip:]host:container[/proto]") and long syntax."""
    out: dict[int, int] = {}
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            if p.get("published") is not None:
                out[int(resolve(str(p["published"])))] = int(p["target"])
            continue
        fields = resolve(str(p)).split("/")[0].split(":")
        if len(fields) >= 2:
            out[int(fields[-2])] = int(fields[-1])
    return out


def mounts(service: dict) -> list[tuple[str | None, str, bool]]:
    """(source or None, target, read_only) for each volume of a service, interpolated."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source"), v["target"], bool(v.get("read_only"))))
            continue
        fields = resolve(v).split(":")
        if len(fields) == 1:
            out.append((None, fields[0], False))
        else:
            mode = fields[2] if len(fields) > 2 else ""
            out.append((fields[0], fields[1], "ro" in mode.split(",")))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def depends(service: dict) -> dict[str, str]:
    dep = service.get("depends_on") or {}
    if isinstance(dep, list):
        return {name: "service_started" for name in dep}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in dep.items()}


def command_list(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def long_running(service: dict) -> bool:
    return str(service.get("restart", "no")) != "no"


# ------------------------------------------------------------------ shape ---


def test_compose_spec_without_version_key(compose: dict) -> None:
    assert "version" not in compose, "the compose spec dropped the top-level version key"


def test_required_services_exist(services: dict) -> None:
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_images_are_pinned(services: dict) -> None:
    for name, svc in services.items():
        if "build" in svc:
            continue
        image = svc.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: image {image!r} must be pinned to a version"


# ------------------------------------------------------------------ Kafka ---


def test_kafka_is_kraft_combined_mode(services: dict) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = resolved_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in env), "KRaft: no ZooKeeper settings"
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node_id}@kafka:")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[key] == "1", key
    assert env["CLUSTER_ID"], "a fixed cluster id keeps the formatted log dirs usable across recreates"


def test_kafka_listeners_internal_and_external(services: dict) -> None:
    kafka = services["kafka"]
    env = resolved_env(kafka)
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert {"PLAINTEXT", "CONTROLLER", "EXTERNAL"} <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    protocol_map = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocol_map)
    # Containers reach the broker as kafka:9092; hosts outside compose on published 9092.
    assert advertised["PLAINTEXT"] == "kafka:9092"
    assert listeners["PLAINTEXT"].rsplit(":", 1)[1] == "9092"
    external_port = int(listeners["EXTERNAL"].rsplit(":", 1)[1])
    assert published_ports(kafka).get(9092) == external_port
    assert advertised["EXTERNAL"].rsplit(":", 1)[1] == "9092"
    assert "CONTROLLER" not in advertised


def test_kafka_log_dirs_on_named_volume(compose: dict, services: dict) -> None:
    kafka = services["kafka"]
    log_dirs = resolved_env(kafka)["KAFKA_LOG_DIRS"]
    sources = {target: src for src, target, _ in mounts(kafka)}
    assert log_dirs in sources
    assert sources[log_dirs] in (compose.get("volumes") or {})


def _kafka_init_script(services: dict) -> str:
    init = services["kafka-init"]
    parts = [*(init.get("entrypoint") or []), *command_list(init)]
    return resolve("\n".join(parts))


def test_kafka_init_is_one_shot_after_kafka(services: dict) -> None:
    init = services["kafka-init"]
    assert init["image"] == services["kafka"]["image"]
    assert str(init.get("restart", "no")) == "no"
    assert depends(init) == {"kafka": "service_healthy"}
    script = _kafka_init_script(services)
    assert "--bootstrap-server kafka:9092" in script
    assert "--if-not-exists" in script


def test_kafka_init_topics_match_settings(services: dict) -> None:
    """kafka-init creates exactly the topics of TopicsSettings, with their partitions and configs."""
    script = _kafka_init_script(services)
    shell_vars = dict(re.findall(r"\b([a-z_]+)=(\d+)\b", script))

    created: dict[str, tuple[int, dict[str, str]]] = {}
    for line in script.splitlines():
        m = re.match(r"\s*create\s+(\S+)\s+(\d+)(.*)$", line)
        if not m:
            continue
        configs = {}
        for key, value in re.findall(r"--config\s+([\w.]+)=(\S+)", m.group(3)):
            configs[key] = shell_vars.get(value.lstrip("$"), value) if value.startswith("$") else value
        created[m.group(1)] = (int(m.group(2)), configs)

    expected = {t.name: t for t in TopicsSettings().all()}
    assert set(created) == set(expected)
    for name, spec in expected.items():
        partitions, configs = created[name]
        assert partitions == spec.partitions, name
        for key, value in spec.configs().items():
            assert configs.get(key) == value, f"{name}: {key}"


# ----------------------------------------------------------------- Triton ---


def test_triton_serves_mounted_model_repository(services: dict) -> None:
    triton = services["triton"]
    cmd = command_list(triton)
    assert cmd[0] == "tritonserver"
    repo = next(a.split("=", 1)[1] for a in cmd if a.startswith("--model-repository="))
    by_target = {target: (src, ro) for src, target, ro in mounts(triton)}
    assert repo in by_target, f"nothing mounted at the model repository {repo}"
    src, read_only = by_target[repo]
    assert (ROOT / src).resolve() == ROOT / "triton_models"
    assert read_only


def test_triton_reserves_a_gpu(services: dict) -> None:
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    gpu = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert gpu, "triton needs an nvidia GPU reservation"
    assert gpu[0].get("count") in (1, "all") or gpu[0].get("device_ids")


def test_triton_ports_shm_and_health(services: dict) -> None:
    triton = services["triton"]
    assert published_ports(triton) == {8000: 8000, 8001: 8001, 8002: 8002}
    assert triton.get("shm_size"), "the Python backend needs more than the 64 MB default /dev/shm"
    test = " ".join(triton["healthcheck"]["test"])
    assert "http://localhost:8000/v2/health/ready" in test


def test_triton_checkpoint_env_documented_not_forced(raw: str, services: dict) -> None:
    # Checkpoints are optional: the env vars are shown commented out, and /checkpoints is mounted.
    env = env_of(services["triton"])
    assert "AVREC_ENCODERS__AUDIO_CHECKPOINT" not in env
    assert re.search(r"#\s*AVREC_ENCODERS__AUDIO_CHECKPOINT: /checkpoints/", raw)
    assert re.search(r"#\s*AVREC_ENCODERS__VIDEO_CHECKPOINT: /checkpoints/", raw)
    assert "/checkpoints" in {target for _, target, _ in mounts(services["triton"])}


def _from_images(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    images = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    return [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), img) for img in images]


def test_triton_dockerfile_base_image() -> None:
    images = _from_images(TRITON_DOCKERFILE)
    assert images and re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", images[-1]), images
    text = TRITON_DOCKERFILE.read_text()
    assert "numpy>=1.26,<2" in text, "the Python backend needs numpy<2"
    assert re.search(r"pip install .*--ignore-requires-python /src/avrec", text), "installs the project"


# Standard-library names that appeared in 3.11 (the worker's Python) and are missing in 3.10.
PY311_ONLY_IMPORTS = {"tomllib", "wsgiref.types"}
PY311_ONLY_NAMES = {("typing", "Self"), ("typing", "LiteralString"), ("typing", "Never"),
                    ("typing", "assert_never"), ("typing", "reveal_type"), ("typing", "Required"),
                    ("typing", "NotRequired"), ("enum", "StrEnum"), ("asyncio", "TaskGroup"),
                    ("asyncio", "timeout"), ("datetime", "UTC")}


def test_code_loaded_by_triton_runs_on_python_310() -> None:
    """The Triton image's Python is 3.10 while pyproject says 3.11: what model.py imports must not need 3.11."""
    import ast

    files = [*sorted((ROOT / "encoders").rglob("*.py")), *sorted((ROOT / "triton_models").rglob("model.py"))]
    files += [ROOT / "streams" / name for name in ("__init__.py", "exceptions.py", "settings.py")]
    problems = []
    for path in files:
        rel = path.relative_to(ROOT)
        try:
            tree = ast.parse(path.read_text(), filename=str(rel), feature_version=(3, 10))
        except SyntaxError as exc:
            problems.append(f"{rel}:{exc.lineno}: 3.11-only syntax ({exc.msg})")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.TryStar):
                problems.append(f"{rel}:{node.lineno}: except* is 3.11-only")
            elif isinstance(node, ast.Import):
                problems += [f"{rel}:{node.lineno}: {a.name}" for a in node.names if a.name in PY311_ONLY_IMPORTS]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module in PY311_ONLY_IMPORTS:
                    problems.append(f"{rel}:{node.lineno}: {node.module}")
                problems += [
                    f"{rel}:{node.lineno}: {node.module}.{a.name}"
                    for a in node.names if (node.module, a.name) in PY311_ONLY_NAMES
                ]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) in PY311_ONLY_NAMES:
                    problems.append(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not problems, "Python 3.11-only code reaches the Triton image (Python 3.10):\n" + "\n".join(problems)


# ----------------------------------------------------------------- Milvus ---


def test_milvus_standalone_with_dependencies(services: dict) -> None:
    milvus = services["milvus"]
    assert milvus["image"].startswith("milvusdb/milvus:v2.5.")
    assert command_list(milvus) == ["milvus", "run", "standalone"]
    env = resolved_env(milvus)
    assert env["ETCD_ENDPOINTS"] == "etcd:2379"
    assert env["MINIO_ADDRESS"] == "minio:9000"
    assert depends(milvus) == {"etcd": "service_healthy", "minio": "service_healthy"}
    assert published_ports(milvus) == {19530: 19530, 9091: 9091}
    assert "http://localhost:9091/healthz" in " ".join(milvus["healthcheck"]["test"])
    assert services["etcd"]["image"].startswith("quay.io/coreos/etcd:v3.5.")
    assert "--console-address" in " ".join(command_list(services["minio"]))


def test_milvus_uses_the_minio_credentials(services: dict) -> None:
    minio, milvus = env_of(services["minio"]), env_of(services["milvus"])
    assert milvus["MINIO_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert milvus["MINIO_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_attu_console(services: dict) -> None:
    attu = services["attu"]
    assert attu["image"].startswith("zilliz/attu:v2.5.")
    assert resolved_env(attu)["MILVUS_URL"] == "milvus:19530"
    assert published_ports(attu) == {8080: 3000}
    assert "milvus" in depends(attu)


# ----------------------------------------------------------------- worker ---


@pytest.mark.parametrize("name", WORKERS)
def test_worker_service(services: dict, name: str) -> None:
    worker = services[name]
    assert command_list(worker) == ["avrec", "worker"]
    assert worker["restart"] == "unless-stopped"
    deps = depends(worker)
    assert deps["kafka-init"] == "service_completed_successfully"
    assert deps["triton"] == "service_healthy"
    assert deps["milvus"] == "service_healthy"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_env_points_at_compose_services(services: dict, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The worker's env, read by the real Settings, reaches the services by their compose names."""
    worker = services[name]
    env = resolved_env(worker)
    assert all(k.startswith("AVREC_") for k in env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()

    assert s.kafka.bootstrap_list == ["kafka:9092"]
    assert s.triton.protocol == "grpc"
    host, port = s.triton.url.rsplit(":", 1)
    assert host == "triton" and int(port) in published_ports(services["triton"]).values()
    assert int(port) == 8001, "gRPC is Triton's port 8001"
    assert s.milvus.uri == "http://milvus:19530"
    assert s.milvus.token is not None and s.milvus.token.get_secret_value().startswith("root:")
    assert s.stack.state_dir == PurePosixPath("/var/lib/avrec")
    state = {target: src for src, target, _ in mounts(worker)}
    assert str(s.stack.state_dir) in state, "Faust's RocksDB state must be on a volume"


def test_worker_replicas_share_an_app_id_and_nothing_else_on_disk(services: dict,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One consumer group (same app id) across the replicas; one data directory and volume per replica."""
    seen = []
    for name in WORKERS:
        env = resolved_env(services[name])
        for key in list(env):
            monkeypatch.delenv(key, raising=False)
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            s = Settings()
        state = {target: src for src, target, _ in mounts(services[name])}[str(s.stack.state_dir)]
        seen.append((s.app_id, s.worker.replica, str(s.faust_datadir), state))
    app_ids, replicas, dirs, volumes = zip(*seen)
    assert len(set(app_ids)) == 1
    assert len(set(replicas)) == len(set(dirs)) == len(set(volumes)) == len(WORKERS), seen


def test_worker_milvus_token_matches_root_password(services: dict) -> None:
    token = env_of(services["worker-0"])["AVREC_MILVUS__TOKEN"]
    password = env_of(services["milvus"])["COMMON_SECURITY_DEFAULTROOTPASSWORD"]
    assert token == f"root:{password}"


def test_worker_dockerfile() -> None:
    images = _from_images(WORKER_DOCKERFILE)
    assert images and all(img == "python:3.11-slim" for img in images), images
    text = WORKER_DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the worker runs as a non-root user"
    assert re.search(r"pip install \.", text)
    assert "shared" not in " ".join(re.findall(r"^(?:COPY|ADD)\s+.*$", text, flags=re.MULTILINE))
    assert re.search(r'^CMD \["avrec", "worker"\]', text, flags=re.MULTILINE)


@pytest.mark.parametrize("name", WORKERS)
def test_worker_web_server_reachable_by_name(services: dict, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The web port listens on every interface and advertises the service's own name, so the other
    worker can forward a read-API request to it, and is published once per worker."""
    env = resolved_env(services[name])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    web = Settings().web
    assert web.enabled and web.bind == "0.0.0.0"
    assert web.host == name, "the advertised host must be this worker's compose service name"
    assert web.port in published_ports(services[name]).values()
    hc = " ".join(services[name]["healthcheck"]["test"])
    assert f"http://localhost:{web.port}/health/live" in hc


# ------------------------------------------------------------- monitoring ---

MONITORING = ROOT / "deploy" / "monitoring"
# Metric names that Triton and Milvus export and the dashboards may use (neither is in this repo).
# Triton (server docs/user_guide/metrics.md; --allow-metrics, --allow-gpu-metrics on port 8002):
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_pending_request_count", "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us",
    "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage",
    "nv_gpu_power_limit", "nv_energy_consumption", "nv_cpu_utilization", "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
}
# Milvus 2.5 (pkg/metrics/proxy_metrics.go: namespace "milvus", subsystem "proxy"; histograms in ms):
_MILVUS_HISTOGRAMS = ("milvus_proxy_req_latency", "milvus_proxy_sq_latency", "milvus_proxy_mutation_latency")
MILVUS_METRICS = {
    "milvus_proxy_req_count", "milvus_proxy_search_vectors_count", "milvus_proxy_insert_vectors_count",
    "milvus_proxy_upsert_vectors_count", "milvus_proxy_delete_vectors_count",
    *(f"{h}_{suffix}" for h in _MILVUS_HISTOGRAMS for suffix in ("bucket", "sum", "count")),
}
# The metric contract between the issue-18 helpers (every name avrec's dashboard relies on).
AVREC_CONTRACT = {
    "avrec_events_in_total", "avrec_lists_out_total", "avrec_consumer_lag", "avrec_freshness_seconds_bucket",
    "avrec_dead_letters_total", "avrec_triton_request_seconds_bucket", "avrec_triton_errors_total",
    "avrec_milvus_request_seconds_bucket", "avrec_milvus_errors_total", "avrec_circuit_breaker_state",
    "avrec_model_info", "avrec_catalogue_coverage_ratio", "avrec_cold_start_lists_ratio",
    "avrec_impressions_total", "avrec_impressed_items_total", "avrec_impression_clicks_total",
    "avrec_impression_hits_total",
}
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"), "info": ("_info",),
}
_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                    "and", "or", "unless", "inf", "nan"}


def avrec_exported_names() -> set[str]:
    """Every sample name avrec's registry can expose (labelled metrics have no samples before first use)."""
    from streams.web.metrics import REGISTRY

    return {f"{fam.name}{suffix}" for fam in REGISTRY.collect() for suffix in _SAMPLE_SUFFIXES[fam.type]}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither functions,
    keywords, label names (in ``{...}`` or ``by (...)``) nor in a range ``[...]``."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\s*(\()?", text):
        if not m.group(2) and m.group(1).lower() not in _PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def test_promql_metric_names_parser() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(avrec_triton_request_seconds_bucket'
            '{model=~"a|b"}[$__rate_interval]))) / on (model) group_left sum without (x) (up offset 5m) > bool 1e3')
    assert promql_metric_names(expr) == {"avrec_triton_request_seconds_bucket", "up"}
    assert promql_metric_names("avrec_model_info") == {"avrec_model_info"}
    assert promql_metric_names('a_total{stage="rate(b)"} and c') == {"a_total", "c"}


def test_avrec_metric_contract_matches_the_registry() -> None:
    missing = AVREC_CONTRACT - avrec_exported_names()
    assert not missing, f"streams/web/metrics.py no longer exports {sorted(missing)}"


def _mount_source(service: dict, target: str) -> Path:
    by_target = {t: src for src, t, _ in mounts(service)}
    assert target in by_target, f"nothing mounted at {target}"
    return (ROOT / by_target[target]).resolve()


@pytest.fixture(scope="module")
def prometheus_config(services: dict) -> dict:
    prom = services["prometheus"]
    config_file = next(a.split("=", 1)[1] for a in command_list(prom) if a.startswith("--config.file="))
    path = _mount_source(prom, config_file)
    assert path == MONITORING / "prometheus" / "prometheus.yml"
    return yaml.safe_load(path.read_text())


def _scrape_job(config: dict, job: str) -> tuple[str, set[str]]:
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert job in jobs, f"no scrape job {job!r}"
    targets = {t for sc in jobs[job].get("static_configs", []) for t in sc["targets"]}
    return jobs[job].get("metrics_path", "/metrics"), targets


def test_prometheus_scrapes_every_worker_on_its_web_port(services: dict, prometheus_config: dict,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    expected = set()
    for name in WORKERS:
        with monkeypatch.context() as m:
            for key, value in resolved_env(services[name]).items():
                m.setenv(key, value)
            expected.add(f"{name}:{Settings().web.port}")
    path, targets = _scrape_job(prometheus_config, "avrec")
    assert path == "/metrics"
    assert targets == expected, "one target per worker service, at its web port"
    assert set(services) >= {t.split(":")[0] for t in targets}


def test_prometheus_scrapes_triton_and_milvus(services: dict, prometheus_config: dict) -> None:
    path, targets = _scrape_job(prometheus_config, "triton")
    assert path == "/metrics" and targets == {"triton:8002"}
    assert 8002 in published_ports(services["triton"]).values()
    assert "--allow-metrics=true" in command_list(services["triton"])
    path, targets = _scrape_job(prometheus_config, "milvus")
    assert path == "/metrics" and targets == {"milvus:9091"}
    assert 9091 in published_ports(services["milvus"]).values()


def test_prometheus_service(services: dict) -> None:
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:v")
    assert published_ports(prom) == {9090: 9090}
    assert "http://localhost:9090/-/ready" in " ".join(prom["healthcheck"]["test"])
    data = next(a.split("=", 1)[1] for a in command_list(prom) if a.startswith("--storage.tsdb.path="))
    assert data in {t for src, t, _ in mounts(prom) if src and not is_bind(src)}, "TSDB on a named volume"
    assert set(WORKERS) <= set(depends(prom))


@pytest.fixture(scope="module")
def grafana_provisioning(services: dict) -> Path:
    path = _mount_source(services["grafana"], "/etc/grafana/provisioning")
    assert path == MONITORING / "grafana" / "provisioning"
    return path


def test_grafana_datasource_is_the_compose_prometheus(services: dict, grafana_provisioning: Path) -> None:
    files = sorted((grafana_provisioning / "datasources").glob("*.y*ml"))
    assert files, "no datasource provisioning file"
    sources = [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]
    prom = [ds for ds in sources if ds["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["uid"] == "prometheus" and prom[0].get("isDefault")
    host, port = prom[0]["url"].removeprefix("http://").split(":")
    assert host == "prometheus" and int(port) in published_ports(services["prometheus"]).values()


@pytest.fixture(scope="module")
def dashboards(services: dict, grafana_provisioning: Path) -> dict[str, dict]:
    """uid -> dashboard, from the folder that the provisioned dashboard provider reads."""
    providers = [p for f in sorted((grafana_provisioning / "dashboards").glob("*.y*ml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    folder = _mount_source(services["grafana"], providers[0]["options"]["path"])
    assert folder == MONITORING / "grafana" / "dashboards"
    out = {}
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        assert doc["uid"] not in out, f"{path.name}: uid {doc['uid']} used twice"
        out[doc["uid"]] = doc
    return out


def _panel_exprs(dashboard: dict) -> list[str]:
    panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_three_dashboards_provisioned(services: dict, dashboards: dict[str, dict]) -> None:
    assert set(dashboards) == {"avrec", "triton", "milvus"}
    home = resolved_env(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert json.loads((MONITORING / "grafana" / "dashboards" / PurePosixPath(home).name).read_text())["uid"] == "avrec"
    for uid, doc in dashboards.items():
        assert doc["title"] and _panel_exprs(doc), uid
        for panel in doc["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "prometheus", f"{uid}: {panel['title']}"


def test_dashboard_queries_use_only_exported_metrics(dashboards: dict[str, dict]) -> None:
    known = avrec_exported_names() | TRITON_METRICS | MILVUS_METRICS
    for uid, doc in dashboards.items():
        for expr in _panel_exprs(doc):
            names = promql_metric_names(expr)
            assert names, f"{uid}: no metric in {expr!r}"
            assert names <= known, f"{uid}: unknown metrics {sorted(names - known)} in {expr!r}"
    used = {uid: set().union(*map(promql_metric_names, _panel_exprs(doc))) for uid, doc in dashboards.items()}
    assert all(n.startswith("nv_") for n in used["triton"])
    assert all(n.startswith("milvus_") for n in used["milvus"])
    missing = AVREC_CONTRACT - used["avrec"]
    assert not missing, f"the avrec dashboard does not show {sorted(missing)}"


def test_avrec_dashboard_online_ctr_and_freshness_quantiles(dashboards: dict[str, dict]) -> None:
    exprs = " ".join(_panel_exprs(dashboards["avrec"]))
    compact = re.sub(r"\s+", "", exprs)
    assert re.search(r"rate\(avrec_impression_clicks_total\[[^\]]+\]\)\)/sumby\(model_version\)"
                     r"\(rate\(avrec_impressed_items_total", compact), "CTR = clicks / impressed items per model_version"
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q},sumby(le)(rate(avrec_freshness_seconds_bucket" in compact, q


def test_grafana_admin_password_is_a_secret(compose: dict, services: dict) -> None:
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    env = env_of(grafana)
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    secret = PurePosixPath(env["GF_SECURITY_ADMIN_PASSWORD__FILE"])
    assert secret.parent == PurePosixPath("/run/secrets") and secret.name in grafana["secrets"]
    source = compose["secrets"][secret.name]
    assert set(source) == {"environment"}, "the password comes from the environment, not a file in the repo"
    assert f"`{source['environment']}`" in DEPLOY_README.read_text()
    assert resolved_env(grafana)["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert published_ports(grafana) == {3000: 3000}
    assert depends(grafana) == {"prometheus": "service_healthy"}


# ----------------------------------------------------------- cross-cutting ---


def test_expected_ports_published_once(services: dict) -> None:
    hosts: list[int] = [h for svc in services.values() for h in published_ports(svc)]
    assert {9092, 8000, 8001, 8002, 19530, 8080, 9001, 9090, 3000, 6066} <= set(hosts)
    assert len(hosts) == len(set(hosts)), "a host port is published twice"


def test_long_running_services_have_healthchecks(services: dict) -> None:
    for name, svc in services.items():
        if not long_running(svc) or name in NO_HEALTHCHECK_OK:
            continue
        hc = svc.get("healthcheck") or {}
        assert hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck"


def test_depends_on_conditions_are_satisfiable(services: dict) -> None:
    for name, svc in services.items():
        for dep, cond in depends(svc).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no check"
            elif cond == "service_completed_successfully":
                assert not long_running(services[dep]), f"{dep} never completes"
            else:
                assert cond == "service_started", f"{name}: unknown condition {cond}"


def test_named_volumes_declared(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services.items():
        for src, _target, _ro in mounts(svc):
            if src and not is_bind(src):
                assert src in declared, f"{name} uses undeclared volume {src}"
                used.add(src)
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"


def test_build_paths_exist(services: dict) -> None:
    built = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert {"triton", *WORKERS} <= set(built)
    for name, build in built.items():
        if isinstance(build, str):
            build = {"context": build}
        context = (ROOT / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
    assert (ROOT / services["triton"]["build"]["dockerfile"]).resolve() == TRITON_DOCKERFILE


def test_dockerignore_keeps_out_local_state_but_not_sources() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns
        )

    for path in (".venv", ".git", ".stack", ".stack-test", ".cache", ".env", "tests", "__pycache__"):
        assert ignored(path), f"{path} should be in .dockerignore"
    copied = set()
    for dockerfile in (WORKER_DOCKERFILE, TRITON_DOCKERFILE):
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile.read_text(), flags=re.MULTILINE):
            copied.update(line.split()[:-1])
    assert {"pyproject.toml", "README.md", "streams", "encoders", "triton_models"} <= copied
    for path in copied:
        assert not ignored(path), f"{path} is COPY'd but excluded by .dockerignore"


# ---------------------------------------------------- interpolation, secrets ---


def _uncommented(raw: str) -> str:
    """The file without ``$$`` escapes and full-line comments (compose interpolates neither)."""
    return "\n".join(line for line in raw.replace("$$", "").splitlines() if not line.lstrip().startswith("#"))


def test_interpolations_are_well_formed(raw: str) -> None:
    """Every ``$`` is either ``$$`` (a literal, e.g. in shell scripts) or a valid ``${VAR...}``."""
    text = _uncommented(raw)
    stripped = INTERPOLATION.sub("", text)
    assert "$" not in stripped, "unescaped $ (shell variables in compose must be written $$)"
    names = {m.group("name") for m in INTERPOLATION.finditer(text)}
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MILVUS_ROOT_PASSWORD"} <= names


def test_every_variable_is_documented(raw: str) -> None:
    readme = DEPLOY_README.read_text()
    names = {m.group("name") for m in INTERPOLATION.finditer(_uncommented(raw))}
    undocumented = sorted(n for n in names if f"`{n}`" not in readme)
    assert not undocumented, f"document these in {DEPLOY_README.relative_to(ROOT)}: {undocumented}"


def test_no_literal_secrets(services: dict) -> None:
    for name, svc in services.items():
        for key, value in env_of(svc).items():
            if SECRET_KEY.search(key):
                if key.endswith("__FILE"):  # Grafana's <setting>__FILE: the value is the path of a compose secret
                    assert value.startswith("/run/secrets/"), f"{name}.{key} must point at a compose secret"
                    continue
                assert INTERPOLATION.search(value), f"{name}.{key} is a literal secret: use ${{VAR:-...}}"
    assert "MINIO_ROOT_PASSWORD" in env_of(services["minio"])


def test_nothing_mounted_from_shared(services: dict) -> None:
    for name, svc in services.items():
        for src, _target, _ro in mounts(svc):
            assert not (src and "shared" in PurePosixPath(src).parts), f"{name} mounts {src}"


def _has_docker_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _has_docker_compose(), reason="no `docker compose` here")
def test_docker_compose_config_accepts_the_file() -> None:
    """Where the Compose CLI exists, it must accept the file (it needs no engine for this)."""
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
