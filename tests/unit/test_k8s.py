"""The Kubernetes manifests in deploy/k8s, checked offline: Kubernetes' own schemas
(kubernetes-validate), the shape of the CRDs it has no schema for (KEDA, Prometheus Operator), what
avrec needs from them (read with the real Settings), and the checkov security linter.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
MILVUS_VALUES = K8S / "milvus" / "values.yaml"
CHECKOV = ROOT / ".cache" / "k8s-tools" / "bin" / "checkov"
# The oldest Kubernetes the manifests target (persistentVolumeClaimRetentionPolicy is GA in 1.32,
# beta and on by default since 1.27).
K8S_VERSION = "1.30"
NAMESPACE = "avrec"
WORKER, HEADLESS, TRITON = "avrec-worker", "avrec-worker-headless", "triton"
# Kinds of CRDs (KEDA, Prometheus Operator) whose schemas kubernetes-validate does not bundle: their
# shape is checked by CRD_REQUIRED below instead.
CRD_REQUIRED: dict[tuple[str, str], list[str]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): ["spec.scaleTargetRef.name", "spec.scaleTargetRef.kind",
                                           "spec.minReplicaCount", "spec.maxReplicaCount", "spec.triggers"],
    ("keda.sh/v1alpha1", "TriggerAuthentication"): ["spec.secretTargetRef"],
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector.matchLabels", "spec.endpoints"],
}


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def docs(kustomization: dict) -> list[dict]:
    return [d for res in kustomization["resources"] for d in _load(K8S / res)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def get(doc: dict, dotted: str):
    for key in dotted.split("."):
        doc = doc[key]
    return doc


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(doc)
    return [*(spec.get("initContainers") or [] if init else []), *spec["containers"]]


def env_list(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


# ------------------------------------------------------------------ files ---


def test_kustomization_lists_every_manifest(kustomization: dict) -> None:
    listed = {K8S / r for r in kustomization["resources"]}
    assert all(p.is_file() for p in listed), sorted(str(p) for p in listed if not p.is_file())
    on_disk = {p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml" and p != MILVUS_VALUES}
    assert on_disk == listed, f"not in kustomization.yaml: {sorted(map(str, on_disk - listed))}"
    assert kustomization["namespace"] == NAMESPACE


def test_every_resource_is_in_the_namespace(docs: list[dict]) -> None:
    for d in docs:
        if d["kind"] == "Namespace":
            assert d["metadata"]["name"] == NAMESPACE
        else:
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']}/{d['metadata']['name']}"


# ---------------------------------------------------------------- schemas ---


def test_core_kinds_validate_against_kubernetes_schemas(docs: list[dict]) -> None:
    errors, validated = [], set()
    for d in docs:
        if (d["apiVersion"], d["kind"]) in CRD_REQUIRED:
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            validated.add(d["kind"])
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)
    assert {"Namespace", "StatefulSet", "Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
            "NetworkPolicy", "PersistentVolumeClaim", "ServiceAccount"} <= validated


def test_schema_validation_rejects_a_misspelt_field(docs: list[dict]) -> None:
    """The strict schemas catch what kubectl would (a guard that the check above can fail)."""
    sts = copy.deepcopy(one(docs, "StatefulSet", WORKER))
    sts["spec"]["volumeClaimTemplate"] = sts["spec"].pop("volumeClaimTemplates")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def crd_problems(doc: dict) -> list[str]:
    required = CRD_REQUIRED.get((doc.get("apiVersion"), doc.get("kind")))
    if required is None:
        return [f"unknown custom resource {doc.get('apiVersion')}/{doc.get('kind')}"]
    problems = [f"metadata.{k} missing" for k in ("name", "namespace") if not doc.get("metadata", {}).get(k)]
    for path in required:
        try:
            value = get(doc, path)
        except (KeyError, TypeError):
            problems.append(f"{path} missing")
            continue
        if value in (None, "", [], {}):
            problems.append(f"{path} empty")
    return problems


def test_custom_resources_have_their_required_fields(docs: list[dict]) -> None:
    crds = [d for d in docs if (d["apiVersion"], d["kind"]) in CRD_REQUIRED]
    assert {d["kind"] for d in crds} == {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
    for d in crds:
        assert not crd_problems(d), (d["kind"], crd_problems(d))
    broken = copy.deepcopy(one(docs, "ScaledObject", WORKER))
    del broken["spec"]["scaleTargetRef"]["name"]
    assert crd_problems(broken) == ["spec.scaleTargetRef.name missing"]


# ----------------------------------------------------------------- worker ---


def worker_env(docs: list[dict], pod: str) -> dict[str, str]:
    """The worker container's environment as the kubelet builds it for pod ``pod``: the ConfigMap,
    then ``env`` with the downward API resolved, secrets as placeholders, and ``$(VAR)`` expanded."""
    sts = one(docs, "StatefulSet", WORKER)
    (container,) = containers(sts, init=False)
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        env.update(one(docs, "ConfigMap", src["configMapRef"]["name"])["data"])
    fields = {"metadata.name": pod, "metadata.namespace": sts["metadata"]["namespace"]}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return env


@pytest.fixture()
def pod_settings(docs: list[dict], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The real Settings of pod avrec-worker-3 (no .env file, no AVREC_ variables of this shell)."""
    for key in [k for k in os.environ if k.startswith("AVREC_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(K8S)
    for key, value in worker_env(docs, f"{WORKER}-3").items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_worker_identity_comes_from_the_pod_name(docs: list[dict], pod_settings: Settings) -> None:
    s = pod_settings
    assert s.worker.replica == f"{WORKER}-3", "the state directory is named after the pod"
    assert s.worker.group_instance_id == f"{WORKER}-3", "static membership: the pod name"
    assert s.worker.standby_replicas >= 1
    assert s.faust_datadir.name == f"{s.app_id}@{WORKER}-3"


def test_worker_web_host_is_the_pods_stable_dns_name(docs: list[dict], pod_settings: Settings) -> None:
    s = pod_settings
    sts, headless = one(docs, "StatefulSet", WORKER), one(docs, "Service", HEADLESS)
    assert sts["spec"]["serviceName"] == HEADLESS
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert s.web.enabled and s.web.bind == "0.0.0.0"
    assert s.web.host == f"{WORKER}-3.{HEADLESS}.{NAMESPACE}.svc"
    (container,) = containers(sts, init=False)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": s.web.port}
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == {"http": s.web.port}


def test_worker_reaches_the_services_by_their_names(docs: list[dict], pod_settings: Settings) -> None:
    s = pod_settings
    host, port = s.triton.url.rsplit(":", 1)
    triton = one(docs, "Service", host)
    assert s.triton.protocol == "grpc" and {p["name"]: p["port"] for p in triton["spec"]["ports"]}["grpc"] == int(port)
    assert s.milvus.uri == "http://milvus:19530", "the Helm release `milvus` of milvus/values.yaml"
    assert s.milvus.token.get_secret_value() == "secret:avrec-secrets/milvus-token"
    assert s.kafka.security_protocol == "SASL_SSL"
    assert s.kafka.sasl_password.get_secret_value() == "secret:avrec-secrets/kafka-sasl-password"


def test_worker_state_on_a_volume_per_replica(docs: list[dict], pod_settings: Settings) -> None:
    sts = one(docs, "StatefulSet", WORKER)
    templates = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    (container,) = containers(sts, init=False)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    state_dir = str(PurePosixPath(pod_settings.stack.state_dir))
    assert mounts.get(state_dir) in templates, "AVREC_STACK__STATE_DIR must be a volumeClaimTemplate"
    assert templates[mounts[state_dir]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert PurePosixPath(pod_settings.faust_datadir).is_relative_to(state_dir)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_secrets_are_referenced_never_inlined(docs: list[dict]) -> None:
    assert not [d for d in docs if d["kind"] == "Secret"], "the Secret is created outside git (README.md)"
    env = env_list(containers(one(docs, "StatefulSet", WORKER), init=False)[0])
    for name in ("AVREC_KAFKA__SASL_PASSWORD", "AVREC_MILVUS__TOKEN"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "avrec-secrets"
    secretish = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        assert not [k for k in cm["data"] if secretish.search(k)], cm["metadata"]["name"]


def _probe(container: dict, kind: str) -> tuple[str, str]:
    http = container[kind]["httpGet"]
    return http["path"], http["port"]


def test_worker_probes_and_disruption_budget(docs: list[dict]) -> None:
    sts = one(docs, "StatefulSet", WORKER)
    (container,) = containers(sts, init=False)
    assert _probe(container, "readinessProbe") == ("/health/ready", "http")
    assert _probe(container, "livenessProbe") == ("/health/live", "http")
    anti = pod_spec(sts)["affinity"]["podAntiAffinity"]
    terms = [t.get("podAffinityTerm", t) for key in anti for t in anti[key]]
    assert any(t["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"] for t in terms)
    pdb = one(docs, "PodDisruptionBudget", WORKER)
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable")


def test_scaled_object_scales_the_worker_on_interactions_lag(docs: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("AVREC_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(K8S)
    s = Settings()
    sts, so = one(docs, "StatefulSet", WORKER), one(docs, "ScaledObject", WORKER)
    target = so["spec"]["scaleTargetRef"]
    assert (target.get("apiVersion"), target["kind"], target["name"]) == ("apps/v1", "StatefulSet", WORKER)
    spec = so["spec"]
    partitions = s.kafka.topics.interactions.partitions
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions, "more workers than partitions idle"
    assert sts["spec"]["replicas"] == spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == s.app_id, "Faust's consumer group is the app id"
    assert meta["topic"] == s.kafka.topics.interactions.name
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    assert meta["bootstrapServers"] == one(docs, "ConfigMap", "avrec-settings")["data"]["AVREC_KAFKA__BOOTSTRAP_SERVERS"]
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    worker = env_list(containers(sts, init=False)[0])
    assert refs["password"] == tuple(worker["AVREC_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"][k]
                                     for k in ("name", "key"))


def test_service_monitor_scrapes_the_worker_metrics(docs: list[dict]) -> None:
    sm = one(docs, "ServiceMonitor", WORKER)
    services = [d for d in docs if d["kind"] == "Service"
                and sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"].get("labels", {}).items()]
    assert [s["metadata"]["name"] for s in services] == [HEADLESS], "one Service, or every worker is scraped twice"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}


# ----------------------------------------------------------------- Triton ---


def test_triton_on_one_gpu_with_its_model_repository(docs: list[dict]) -> None:
    deploy = one(docs, "Deployment", TRITON)
    (triton,) = containers(deploy, init=False)
    assert str(triton["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert _probe(triton, "readinessProbe") == ("/v2/health/ready", "http")
    repo = next(a.split("=", 1)[1] for a in triton["command"] if a.startswith("--model-repository="))
    mounts = {m["mountPath"]: m for m in triton["volumeMounts"]}
    assert repo in mounts and mounts[repo].get("readOnly")
    fillers = [c for c in pod_spec(deploy).get("initContainers") or []
               if any(m["name"] == mounts[repo]["name"] for m in c.get("volumeMounts", []))]
    assert fillers and fillers[0]["image"] == triton["image"], "the repository comes from the same image"
    assert "--allow-metrics=true" in triton["command"]
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert deploy["spec"]["strategy"]["type"] == "Recreate"


# --------------------------------------------------------------- security ---


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def test_every_container_is_locked_down(docs: list[dict]) -> None:
    assert {d["metadata"]["name"] for d in workloads(docs)} == {WORKER, TRITON}
    for wl in workloads(docs):
        spec = pod_spec(wl)
        pod_sc = spec.get("securityContext") or {}
        assert spec.get("automountServiceAccountToken") is False, wl["metadata"]["name"]
        for c in containers(wl):
            where = f"{wl['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext") or {}
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), where
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]) and c["resources"].get("requests"), where
            assert not re.search(r":latest$|^[^:]+$", c["image"]), f"{where}: pin the image"


# ----------------------------------------------------------------- Milvus ---


def test_milvus_helm_values_match_compose_and_settings(docs: list[dict]) -> None:
    values = yaml.safe_load(MILVUS_VALUES.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert values["cluster"]["enabled"] is False, "standalone, as in compose"
    image = compose["services"]["milvus"]["image"]
    assert f"{values['image']['all']['repository']}:{values['image']['all']['tag']}" == image
    user = yaml.safe_load(values["extraConfigFiles"]["user.yaml"])
    assert user["common"]["security"]["authorizationEnabled"] is True
    assert values["minio"]["existingSecret"], "MinIO credentials from a Secret, not the chart's defaults"
    assert not values["pulsarv3"]["enabled"] and not values["pulsar"]["enabled"]
    readme = (K8S / "README.md").read_text()
    m = re.search(r"helm (?:upgrade --install|install) (\S+) milvus/milvus --version (\S+) -n (\S+) "
                  r"-f deploy/k8s/milvus/values\.yaml", readme)
    assert m, "README.md gives the helm command with a pinned chart version"
    release, _version, namespace = m.groups()
    uri = one(docs, "ConfigMap", "avrec-settings")["data"]["AVREC_MILVUS__URI"]
    assert uri == f"http://{release}:19530" and namespace == NAMESPACE


# ---------------------------------------------------------------- checkov ---


INSECURE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: insecure, namespace: avrec}
spec:
  selector: {matchLabels: {app: insecure}}
  template:
    metadata: {labels: {app: insecure}}
    spec:
      containers:
        - name: c
          image: busybox:latest
          securityContext: {privileged: true}
"""


def skip_annotations(docs: list[dict]) -> dict[tuple[str, str], str]:
    """(check id, "Kind.namespace.name") -> reason, from the ``checkov.io/skip<n>`` annotations."""
    out = {}
    for d in docs:
        for key, value in (d["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                out[(check, f"{d['kind']}.{d['metadata']['namespace']}.{d['metadata']['name']}")] = reason
    return out


@pytest.mark.skipif(not CHECKOV.exists() and os.environ.get("AVREC_REQUIRE_CHECKOV") != "1",
                    reason="checkov is not installed: run deploy/local/k8s-tools.sh (CI sets AVREC_REQUIRE_CHECKOV=1)")
def test_checkov_finds_nothing_but_the_documented_skips(docs: list[dict], tmp_path: Path) -> None:
    """checkov over deploy/k8s plus one deliberately insecure manifest: the insecure one must fail
    (the scan really runs and reports), ours must not, and every skip is an annotation with a reason."""
    assert CHECKOV.exists(), "AVREC_REQUIRE_CHECKOV=1 but checkov is missing: run deploy/local/k8s-tools.sh"
    scan = tmp_path / "k8s"
    shutil.copytree(K8S, scan)
    (scan / "zz-insecure.yaml").write_text(INSECURE)
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(scan), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    if isinstance(report, list):  # one entry per framework when checkov ran more than one
        (report,) = [r for r in report if r["check_type"] == "kubernetes"]
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    failed = report["results"]["failed_checks"]
    ours = sorted({(c["check_id"], c["resource"], c["check_name"]) for c in failed
                   if not re.match(r"(Deployment|Pod)\.avrec\.insecure\b", c["resource"])})
    assert not ours, "checkov failures (fix, or skip with checkov.io/skip<n>: ID=reason):\n" + "\n".join(map(str, ours))
    insecure = {c["check_id"] for c in failed}
    assert {"CKV_K8S_16", "CKV_K8S_14"} <= insecure, "privileged and :latest must be caught"
    passed = {c["resource"] for c in report["results"]["passed_checks"]}
    assert {f"StatefulSet.{NAMESPACE}.{WORKER}", f"Deployment.{NAMESPACE}.{TRITON}"} <= passed
    skipped = {(c["check_id"], c["resource"]) for c in report["results"]["skipped_checks"]}
    annotations = skip_annotations(docs)
    assert skipped == set(annotations), "every skip is a checkov.io/skip annotation, and every annotation is used"
    for (check, resource), reason in annotations.items():
        assert len(reason.split()) >= 8, f"{resource} skips {check}: give the reason"
