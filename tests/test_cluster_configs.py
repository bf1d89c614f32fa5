"""Every file in cluster/ validates against its schema (Ray's cluster-launcher schema, KubeRay's v1
CRDs) and passes the security rules: token auth on, Ray's own ports off the public internet, no
secret in a file. Each rule is also shown to fire on a config that breaks it."""
from __future__ import annotations

import copy
import gzip
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER_CONFIGS = sorted(CLUSTER.glob("*.yaml"))
KUBE_MANIFESTS = sorted((CLUSTER / "kuberay").glob("*.yaml"))
# A copy of KubeRay's CRD schemas (see its "_source"): validating needs no cluster and no network.
CRD_SCHEMAS = json.loads(gzip.decompress((REPO / "tests/data/kuberay-v1-crd-schemas.json.gz").read_bytes()))
WORLD = {"0.0.0.0/0", "::/0"}
USER_FACING_PORTS = {443, 8000}  # Serve (behind TLS); nothing of Ray's own
SECRET_PATTERNS = [re.compile(p) for p in (
    r"AKIA[0-9A-Z]{16}",                                   # AWS access key id
    r"(?i)aws_secret_access_key\s*[:=]",
    r"(?i)RAY_AUTH_TOKEN\s*[:=]\s*['\"]?[0-9a-f]{16,}",    # a literal Ray token
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"(?i)password\s*[:=]\s*['\"]?[^\s'\"{]+")]
SECRET_ENV_NAME = re.compile(r"(?i)(token|secret|password|api_?key|access_key)")


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- the security rules, as functions so the tests below can show that each one fires -------------

def launcher_problems(config: dict, path_text: str = "") -> list[str]:
    problems = []
    if config["provider"]["type"] == "fake_multinode":
        # One machine: the head's start command (in the file's header) turns token auth on, and the
        # nodes the fake provider starts inherit it; every address is the loopback.
        if "RAY_AUTH_MODE=token" not in path_text:
            problems.append("the fake cluster's start command does not set RAY_AUTH_MODE=token")
        host = config["provider"].get("gcs_address", "").rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):
            problems.append(f"the fake cluster's GCS is on {host}, not the loopback")
        return problems
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config.get(key, []) if "ray start" in c]
        if not starts:
            problems.append(f"{key} has no `ray start` (Ray's defaults bind the dashboard to 0.0.0.0)")
        for command in starts:
            if "RAY_AUTH_MODE=token" not in command:
                problems.append(f"{key}: `ray start` without RAY_AUTH_MODE=token")
            if re.search(r"--(dashboard-host|ray-client-server-host)[= ]0\.0\.0\.0", command):
                problems.append(f"{key}: a Ray service bound to 0.0.0.0")
    if config["provider"]["type"] == "aws":
        group = config["provider"].get("security_group")
        if not group:
            problems.append("no provider.security_group: Ray's default one opens SSH to 0.0.0.0/0")
        for rule in (group or {}).get("IpPermissions", []):
            cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])} | {
                r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
            ports = set(range(int(rule.get("FromPort", 0)), int(rule.get("ToPort", 65535)) + 1))
            if cidrs & WORLD and not ports <= USER_FACING_PORTS:
                problems.append(f"ports {rule.get('FromPort')}-{rule.get('ToPort')} open to the internet")
    return problems


def cluster_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    return {"RayCluster": [spec], "RayJob": [spec.get("rayClusterSpec", {})],
            "RayService": [spec.get("rayClusterConfig", {})]}.get(doc["kind"], [])


def containers(doc: dict):
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "containers" and isinstance(value, list):
                    yield from value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
    yield from walk(doc)


def kube_problems(doc: dict) -> list[str]:
    problems = []
    for spec in cluster_specs(doc):
        if spec.get("authOptions", {}).get("mode") != "token":
            problems.append(f"{doc['kind']}: Ray token auth is off (authOptions.mode != token)")
        service = spec.get("headGroupSpec", {}).get("serviceType", "ClusterIP")
        if service != "ClusterIP":
            problems.append(f"{doc['kind']}: head service is {service}: Ray's ports would leave the cluster")
    for container in containers(doc):
        for port in container.get("ports", []):
            if "hostPort" in port:
                problems.append(f"container {container.get('name')}: hostPort {port['hostPort']}")
        for env in container.get("env", []):
            if SECRET_ENV_NAME.search(env.get("name", "")) and "value" in env:
                problems.append(f"container {container.get('name')}: secret {env['name']} as a literal value")
    if doc["kind"] == "Service" and doc.get("spec", {}).get("type") in ("LoadBalancer", "NodePort"):
        problems.append(f"Service {doc['metadata']['name']} faces outside the cluster")
    if doc["kind"] == "Ingress":
        if not doc["spec"].get("tls"):
            problems.append("Ingress without TLS")
        for rule in doc["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                port = path["backend"]["service"]["port"].get("number")
                if port not in USER_FACING_PORTS:
                    problems.append(f"Ingress routes to port {port}, which is not Serve's")
    return problems


def secret_problems(text: str) -> list[str]:
    return [f"looks like a secret: {m.group(0)[:24]}..." for p in SECRET_PATTERNS for m in p.finditer(text)]


# --- every shipped config --------------------------------------------------------------------------

@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_matches_rays_schema(path):
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = yaml.safe_load(path.read_text())
    # prepare_config fills a cloud provider's defaults; the fake provider ships none, and its
    # file is complete as written.
    validate_config(config if config["provider"]["type"] == "fake_multinode" else prepare_config(config))


@pytest.mark.parametrize("path", KUBE_MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_matches_the_crd(path):
    for doc in load_all(path):
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.Draft7Validator(CRD_SCHEMAS[doc["kind"]]).validate(doc)
        else:  # plain Kubernetes objects: the fields the API server requires
            assert doc.get("apiVersion") and doc.get("metadata", {}).get("name") and doc.get("spec")


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_is_not_exposed(path):
    assert launcher_problems(yaml.safe_load(path.read_text()), path.read_text()) == []


@pytest.mark.parametrize("path", KUBE_MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_is_not_exposed(path):
    assert [p for doc in load_all(path) for p in kube_problems(doc)] == []


def test_every_cluster_kind_carries_auth():
    kinds = {doc["kind"] for path in KUBE_MANIFESTS for doc in load_all(path)}
    assert {"RayCluster", "RayJob", "RayService", "Ingress"} <= kinds


@pytest.mark.parametrize("path", sorted(CLUSTER.rglob("*.yaml")), ids=lambda p: p.name)
def test_no_secret_in_a_config_file(path):
    assert secret_problems(path.read_text()) == []


# --- each rule fires on a config that breaks it ----------------------------------------------------

def test_schemas_reject_broken_configs():
    from ray.autoscaler._private.util import prepare_config, validate_config
    aws = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    aws["max_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(aws))
    cluster = load_all(CLUSTER / "kuberay" / "raycluster.yaml")[0]
    del cluster["spec"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        jsonschema.Draft7Validator(CRD_SCHEMAS["RayCluster"]).validate(cluster)


def test_launcher_rules_fire():
    good = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    no_auth = copy.deepcopy(good)
    no_auth["head_start_ray_commands"] = [c.replace("RAY_AUTH_MODE=token ", "")
                                          for c in no_auth["head_start_ray_commands"]]
    public_dashboard = copy.deepcopy(good)
    public_dashboard["head_start_ray_commands"] = [c.replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
                                                   for c in public_dashboard["head_start_ray_commands"]]
    open_gcs = copy.deepcopy(good)
    open_gcs["provider"]["security_group"]["IpPermissions"].append(
        {"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    default_group = copy.deepcopy(good)
    del default_group["provider"]["security_group"]
    defaults = copy.deepcopy(good)
    del defaults["worker_start_ray_commands"]
    for broken, needle in ((no_auth, "RAY_AUTH_MODE"), (public_dashboard, "0.0.0.0"),
                           (open_gcs, "6379-6379"), (default_group, "security_group"),
                           (defaults, "worker_start_ray_commands")):
        assert any(needle in p for p in launcher_problems(broken)), needle
    serve_open = copy.deepcopy(good)
    serve_open["provider"]["security_group"]["IpPermissions"].append(
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    assert launcher_problems(serve_open) == []  # HTTPS to Serve may face users


def test_kube_rules_fire():
    cluster = load_all(CLUSTER / "kuberay" / "raycluster.yaml")[0]
    no_auth = copy.deepcopy(cluster)
    del no_auth["spec"]["authOptions"]
    public_head = copy.deepcopy(cluster)
    public_head["spec"]["headGroupSpec"]["serviceType"] = "LoadBalancer"
    literal_secret = copy.deepcopy(cluster)
    literal_secret["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"})
    host_port = copy.deepcopy(cluster)
    host_port["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"].append(
        {"containerPort": 8265, "hostPort": 8265})
    ingress = load_all(CLUSTER / "kuberay" / "serve-ingress.yaml")[0]
    no_tls = copy.deepcopy(ingress)
    del no_tls["spec"]["tls"]
    dashboard_ingress = copy.deepcopy(ingress)
    dashboard_ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] = 8265
    for broken, needle in ((no_auth, "token auth"), (public_head, "LoadBalancer"),
                           (literal_secret, "AWS_SECRET_ACCESS_KEY"), (host_port, "hostPort"),
                           (no_tls, "TLS"), (dashboard_ingress, "8265")):
        assert any(needle in p for p in kube_problems(broken)), needle


def test_secret_scan_fires():
    assert secret_problems("env: {AWS_ACCESS_KEY_ID: AKIAABCDEFGHIJKLMNOP}")
    assert secret_problems("RAY_AUTH_TOKEN=3f2a9c0e5b7d4e1fa8c6b2d0e9f1a3c5 ray start")
    assert not secret_problems("aws secretsmanager get-secret-value --secret-id bassray/ray-auth-token")


def test_serve_configs_that_face_users_require_keys():
    """The deploy configs bind beyond 127.0.0.1, so their app args require API keys from a file."""
    serve_config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    rayservice = yaml.safe_load((CLUSTER / "kuberay" / "rayservice.yaml").read_text())
    apps = serve_config["applications"] + yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    assert serve_config["http_options"]["host"] == "0.0.0.0"
    for app in apps:
        assert app["args"]["require_api_key"] is True and app["args"]["api_keys_file"].startswith("/etc/")
        assert "api_keys" not in app["args"]  # secrets live in a mounted file, not in the config
