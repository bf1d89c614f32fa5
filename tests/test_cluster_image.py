"""Every cluster config runs the project's image (Dockerfile) on the pinned Ray, and nothing installs
the project at run time. Docker cannot run here: `.ci/run` runs the Dockerfile's install line in a
fresh venv instead, and a test below keeps the two the same line."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
PINNED_RAY = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', (REPO / "pyproject.toml").read_text())[1]
OUR_IMAGE = re.compile(r"^[\w.:-]+(/[\w.-]+)*/bassray:[\w.-]+-ray(?P<ray>[\d.]+)$")
RAY_IMAGE = re.compile(r"^rayproject/(?P<repo>[\w-]+):(?P<ray>[\d.]+)(-py\d+)?(-\w+)?$")
PROJECT = re.compile(r"^(-e\s*)?\.$|bassray|git\+")


def dockerfile_base() -> str:
    text = (REPO / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    base = re.search(r"^FROM (\S+)", text, re.M)[1]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base)


def dockerfile_install_line() -> str:
    lines = re.findall(r"^RUN (python -m pip install .*)$", (REPO / "Dockerfile").read_text(), re.M)
    assert len(lines) == 1, "the Dockerfile should install the project with one `RUN python -m pip install` line"
    return lines[0]


def image_problems(image: str) -> list[str]:
    if "ray-ml" in image:
        return [f"{image}: Ray stopped publishing ray-ml images after 2.49; build the Dockerfile"]
    for pattern in (OUR_IMAGE, RAY_IMAGE):
        match = pattern.match(image)
        if match and match["ray"] != PINNED_RAY:
            return [f"{image}: Ray {match['ray']}, but pyproject.toml pins {PINNED_RAY}"]
        if match:
            return []
    return [f"{image}: neither the project's image (…/bassray:VERSION-ray{PINNED_RAY}) nor rayproject/ray"]


def runtime_env_problems(env: dict | None) -> list[str]:
    problems = []
    for key in ("pip", "uv", "conda"):
        packages = (env or {}).get(key) or []
        packages = packages.get("packages", []) if isinstance(packages, dict) else packages
        for package in packages if isinstance(packages, list) else [packages]:
            if PROJECT.search(str(package).strip()):
                problems.append(f"runtime_env {key} installs the project ({package!r}): the image holds it")
    return problems


def _walk(node, key: str):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def config_problems(doc: dict) -> list[str]:
    """Images, Ray versions and runtime environments of one launcher config or KubeRay object."""
    problems = []
    images = list(_walk(doc, "image")) + [v for k in ("head_image", "worker_image") for v in _walk(doc, k)]
    for image in images:
        problems += image_problems(str(image))
    for version in _walk(doc, "rayVersion"):
        if str(version) != PINNED_RAY:
            problems.append(f"rayVersion {version}, but pyproject.toml pins {PINNED_RAY}")
    envs = list(_walk(doc, "runtime_env")) + [yaml.safe_load(t) for t in _walk(doc, "runtimeEnvYAML")]
    for config in _walk(doc, "serveConfigV2"):
        envs += [app.get("runtime_env") for app in yaml.safe_load(config)["applications"]]
    for env in envs:
        problems += runtime_env_problems(env)
    for command in list(_walk(doc, "setup_commands")):
        for line in command if isinstance(command, list) else [command]:
            if "pip install" in str(line) and "bassray" in str(line):
                problems.append(f"setup command installs the project: {line}")
    return problems


def shipped_configs() -> list[tuple[str, dict]]:
    paths = sorted(CLUSTER.rglob("*.yaml")) + [REPO / "serve" / "config.yaml"]
    return [(str(p.relative_to(REPO)), doc) for p in paths for doc in yaml.safe_load_all(p.read_text()) if doc]


def test_dockerfile_builds_on_the_pinned_ray():
    base = dockerfile_base()
    assert base == f"rayproject/ray:{PINNED_RAY}-py311-gpu", base
    assert image_problems(base) == []
    assert "-e" not in dockerfile_install_line().split()  # a real install, not a link to the build context


def test_every_config_runs_the_image_and_installs_nothing():
    problems = {name: p for name, doc in shipped_configs() if (p := config_problems(doc))}
    assert problems == {}
    images = {str(i) for _, doc in shipped_configs() for i in _walk(doc, "image")}
    assert images and all(OUR_IMAGE.match(i) for i in images), images


def test_image_rules_fire():
    good = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    ray_ml = copy.deepcopy(good)
    ray_ml["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = \
        f"rayproject/ray-ml:{PINNED_RAY}-py311-gpu"
    old_ray = copy.deepcopy(good)
    old_ray["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] = "rayproject/ray:2.59.0-py311"
    old_ours = copy.deepcopy(good)
    old_ours["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] = \
        "registry.example.com/you/bassray:0.1.0-ray2.50.0"
    version = copy.deepcopy(good)
    version["spec"]["rayVersion"] = "2.49.0"
    for broken, needle in ((ray_ml, "ray-ml"), (old_ray, "2.59.0"), (old_ours, "2.50.0"), (version, "rayVersion")):
        assert any(needle in p for p in config_problems(broken)), needle
    service = yaml.safe_load((CLUSTER / "kuberay" / "rayservice.yaml").read_text())
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    serve_config["applications"][0]["runtime_env"] = {"working_dir": "https://x/y.zip", "pip": ["-e ."]}
    service["spec"]["serveConfigV2"] = yaml.safe_dump(serve_config)
    assert any("installs the project" in p for p in config_problems(service))
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-train-ldm.yaml").read_text())
    job["spec"]["runtimeEnvYAML"] = "pip: ['bassray @ git+https://github.com/bassray/bassray']\n"
    assert any("installs the project" in p for p in config_problems(job))
    assert runtime_env_problems({"pip": ["librosa"]}) == []  # other packages are the user's call


def test_ci_runs_the_dockerfile_install_line():
    """`.ci/run` takes the install line from the Dockerfile itself, so the two cannot drift apart."""
    ci = (REPO / ".ci" / "run").read_text()
    assert "Dockerfile" in ci and "python -m pip install" in dockerfile_install_line()
    extract = re.search(r"^install_line=\$\(sed -n '(.*)' Dockerfile\)$", ci, re.M)
    assert extract, ".ci/run should read the install line out of the Dockerfile with sed"
