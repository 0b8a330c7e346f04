"""The Helm chart deploy/helm/vecwal: ``helm lint --strict`` and ``helm template`` with the
default values and a production-like set (ci/production-values.yaml), every rendered manifest
validated against Kubernetes's own JSON schemas (kubernetes-validate, strict: an unknown or
misspelt field fails), and the chart's promises read from what it renders: the ConfigMap's
vecwal.toml is one the daemon's own loader accepts, the grace period outlasts the shutdown
timeout, the probes reach the port the daemon listens on, the selectors select, the pods run
as the image's non-root user on a read-only root, the commands are vecwal's, and the
PrometheusRule holds exactly the rules of deploy/prometheus/alerts.yml.

The prometheus-operator kinds (ServiceMonitor, PrometheusRule) have no schema in that set:
they are checked structurally (apiVersion, kind, metadata, the fields the operator needs)."""

from __future__ import annotations

import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from daemon.cli import _parser
from daemon.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/vecwal"
PRODUCTION = CHART / "ci/production-values.yaml"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
CHART_ALERTS = CHART / "files/alerts.yml"
DOCKERFILE = ROOT / "deploy/container/Dockerfile"
NAMESPACE = "backup"
RELEASE = "vecwal"
CONFIG_PATH = "/etc/vecwal/vecwal.toml"
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest schema set
KUBE_VERSIONS = ("1.27", kubernetes_validate.latest_version())
assert yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"] == ">=1.27.0-0"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}

Manifests = list[dict[str, Any]]


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def render(helm: Path, *args: str) -> Manifests:
    proc = _helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def default(helm: Path) -> Manifests:
    return render(helm)


@pytest.fixture(scope="module")
def production(helm: Path) -> Manifests:
    return render(helm, "-f", str(PRODUCTION))


@pytest.fixture(params=["default", "production"])
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def one(docs: Manifests, kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def pod_specs(docs: Manifests) -> dict[str, dict[str, Any]]:
    """kind/name -> the pod spec of every workload."""
    out = {}
    for d in docs:
        if d["kind"] == "Deployment":
            out[f"Deployment/{d['metadata']['name']}"] = d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            out[f"CronJob/{d['metadata']['name']}"] = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return out


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def values(path: Path | None = None) -> dict[str, Any]:
    base: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    if path:
        base.update(yaml.safe_load(path.read_text()))  # top-level keys replace (enough here)
    return base


def test_helm_lint(helm: Path) -> None:
    for extra in ((), ("-f", str(PRODUCTION))):
        proc = _helm(helm, "lint", "--strict", str(CHART), *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout, proc.stdout


def test_the_resources_rendered(default: Manifests, production: Manifests) -> None:
    assert sorted(d["kind"] for d in default) == [
        "ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    assert sorted(d["kind"] for d in production) == [
        "ConfigMap", "CronJob", "CronJob", "CronJob", "Deployment", "PodDisruptionBudget",
        "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"]
    for d in default + production:
        assert d["apiVersion"] and d["kind"], d
        meta = d["metadata"]
        assert meta["name"] and meta["namespace"] == NAMESPACE, meta
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, meta
    assert one(production, "Deployment")["spec"]["replicas"] == 3
    assert one(default, "Deployment")["spec"]["replicas"] == 1


def test_manifests_match_the_kubernetes_schemas(manifests: Manifests) -> None:
    for doc in manifests:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} against Kubernetes "
                            f"{version}: {e.message} at {'.'.join(map(str, e.path))}")


def test_the_config_map_is_a_config_the_daemon_loads(manifests: Manifests, tmp_path: Path) -> None:
    toml = one(manifests, "ConfigMap")["data"]["vecwal.toml"]
    deployment = one(manifests, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (tmp_path / "vecwal.toml").write_text(toml)
    # with the environment the pod gives it (the image's ENV overridden by the chart's)
    config = load_config(tmp_path / "vecwal.toml", env_of(container))
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert config.metrics.listen == f"0.0.0.0:{port}"
    assert config.log.format == "json"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert f"{mounts['config']}/vecwal.toml" == CONFIG_PATH
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == one(manifests, "ConfigMap")["metadata"]["name"]
    # the checksum rolls the pods when the file changes
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/config"]) == 64


def test_production_config_is_rendered_as_written(production: Manifests) -> None:
    rendered = tomllib.loads(one(production, "ConfigMap")["data"]["vecwal.toml"])
    assert rendered == values(PRODUCTION)["config"]  # types kept: integers stay integers
    assert rendered["kafka"]["client"]["security.protocol"] == "SASL_SSL"


def test_replicas_share_one_consumer_group(production: Manifests) -> None:
    """The group is the file's, one for every replica: nothing per pod overrides it."""
    container = one(production, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not any(e["name"].startswith("VECWAL_KAFKA_GROUP") for e in container["env"])
    toml = tomllib.loads(one(production, "ConfigMap")["data"]["vecwal.toml"])
    assert toml["kafka"]["group_id"] == "vecwal-prod"


def test_the_grace_period_outlasts_the_shutdown_timeout(manifests: Manifests, helm: Path) -> None:
    spec = one(manifests, "Deployment")["spec"]["template"]["spec"]
    toml = tomllib.loads(one(manifests, "ConfigMap")["data"]["vecwal.toml"])
    shutdown = toml["capture"]["shutdown_timeout_s"]
    assert spec["terminationGracePeriodSeconds"] >= shutdown + 30, (spec, shutdown)


def test_a_grace_period_too_short_is_refused(helm: Path) -> None:
    proc = _helm(helm, "template", RELEASE, str(CHART), "--set", "terminationGracePeriodSeconds=40")
    assert proc.returncode != 0
    assert "terminationGracePeriodSeconds (40) must be at least" in proc.stderr, proc.stderr
    proc = _helm(helm, "template", RELEASE, str(CHART), "--set", "config.metrics.listen=0.0.0.0:1")
    assert proc.returncode != 0 and "config.metrics.listen" in proc.stderr, proc.stderr


def test_probes_and_the_service_reach_the_metrics_port(manifests: Manifests) -> None:
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen = env_of(container)["VECWAL_METRICS_LISTEN"]
    assert listen == f"0.0.0.0:{ports['metrics']}"
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(p["port"] in ports or p["port"] in ports.values() for p in probes.values())
    service = one(manifests, "Service")
    [sport] = service["spec"]["ports"]
    assert sport["targetPort"] in ports and sport["port"] == ports["metrics"]
    assert service["spec"]["publishNotReadyAddresses"] is True
    labels = pod["metadata"]["labels"]
    selected = [service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
                one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]]
    for selector in selected:
        assert selector.items() <= labels.items(), (selector, labels)
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "daemon"


def test_the_pods_run_as_the_images_user_on_a_read_only_root(manifests: Manifests) -> None:
    dockerfile = DOCKERFILE.read_text()
    assert "USER 10001:10001" in dockerfile and "TMPDIR=/tmp" in dockerfile
    for name, spec in pod_specs(manifests).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            assert sc["runAsUser"] == 10001 and sc["runAsNonRoot"] is True, name
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], name
            assert env_of(c)["TMPDIR"] == "/tmp", name
            # the root filesystem is read-only: the only writable mount is /tmp
            writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
            assert writable == ["/tmp"], (name, writable)


def test_the_image(default: Manifests, production: Manifests) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert f"ARG VERSION={project['version']}" in DOCKERFILE.read_text()
    [c] = one(default, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"vecwal:{chart['appVersion']}"
    assert f"EXPOSE {c['ports'][0]['containerPort']}" in DOCKERFILE.read_text()
    for spec in pod_specs(production).values():
        assert spec["containers"][0]["image"] == "registry.example.com/platform/vecwal:0.1.0"


def test_the_commands_are_vecwals(production: Manifests) -> None:
    """Each container's args (the image's entry point is vecwal) parse with vecwal's own CLI."""
    commands = {}
    for name, spec in pod_specs(production).items():
        [c] = spec["containers"]
        args = _parser().parse_args(c["args"])
        assert args.config == CONFIG_PATH, name
        commands[name.split("/")[0] + ":" + c["args"][0]] = shlex.join(c["args"])
    assert commands == {
        "Deployment:run": f"run --config {CONFIG_PATH}",
        "CronJob:drill": f"drill --config {CONFIG_PATH}",
        "CronJob:verify": f"verify --config {CONFIG_PATH} --deep",
        "CronJob:prune": f"prune --config {CONFIG_PATH} --confirm",
    }
    for cron in (d for d in production if d["kind"] == "CronJob"):
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        job = cron["spec"]["jobTemplate"]["spec"]
        assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    # scheduled in the CronJobs, so not also inside vecwal run
    toml = tomllib.loads(one(production, "ConfigMap")["data"]["vecwal.toml"])
    assert toml["drill"]["interval_s"] == 0 and toml["retention"]["interval_s"] == 0


def test_credentials_from_a_secret_or_the_service_account(default: Manifests,
                                                          production: Manifests) -> None:
    account = one(production, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for spec in pod_specs(production).values():
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "vecwal-credentials"}}]
    [c] = one(default, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in c
    # no secret in the ConfigMap: the password comes from the Secret's variable
    toml = tomllib.loads(one(production, "ConfigMap")["data"]["vecwal.toml"])
    assert "sasl.password" not in toml["kafka"]["client"]


def test_the_disruption_budget(manifests: Manifests) -> None:
    pdb = one(manifests, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    strategy = one(manifests, "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_the_chart_carries_alerts_yml_unchanged() -> None:
    assert CHART_ALERTS.read_bytes() == ALERTS.read_bytes(), (
        "deploy/helm/vecwal/files/alerts.yml differs from deploy/prometheus/alerts.yml: "
        "cp deploy/prometheus/alerts.yml deploy/helm/vecwal/files/alerts.yml")


def test_the_prometheus_rule_holds_the_same_rules(production: Manifests) -> None:
    rule = one(production, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    assert set(rule["spec"]) == {"groups"}


def test_the_service_monitor_scrapes_as_the_rules_job(production: Manifests) -> None:
    monitor = one(production, "ServiceMonitor")
    service = one(production, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    [relabel] = endpoint["relabelings"]
    assert relabel["targetLabel"] == "job"
    # VecwalDown and VecwalNotScraped select this job
    assert f'up{{job="{relabel["replacement"]}"}}' in ALERTS.read_text()
