"""The ``kaniko`` strategy's objects: valid Kubernetes 1.31 objects, exact executor args.

Every Secret and Job is checked with ``kubelab.validation.manifests.validate_object`` (the
strict OpenAPI schemas, unknown fields are errors), and the registry token lives in the
Secret only.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kubelab.errors import UsageError
from kubelab.images.build import ImageBuild, PlannedImage
from kubelab.images.kaniko import (
    KANIKO_IMAGE,
    docker_config_json,
    git_context,
    job_name,
    kaniko_job,
    kaniko_objects,
    registry_pull_secret,
)
from kubelab.validation.manifests import validate_object

APP = Path(__file__).resolve().parents[2] / "app_backend"
NODE_REGISTRY = "localhost:30300"
CLUSTER_REGISTRY = "gitea-http.gitea.svc.cluster.local:3000"
REPO_URL = "http://gitea-http.gitea.svc.cluster.local:3000/kubelab/app-backend.git"
TOKEN = "3b5d5c3712955042212316173ccf37be80000000"


def build(version: str) -> ImageBuild:
    return ImageBuild(
        "app-backend", version, APP, "Dockerfile", "VERSION", NODE_REGISTRY, "kubelab"
    )


def assert_valid(obj: dict[str, Any]) -> None:
    problems = validate_object(obj, "kaniko")
    assert problems == [], "\n".join(map(str, problems))


def decoded_config(secret: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    return config


def test_pull_secret_is_a_valid_dockerconfigjson() -> None:
    secret = registry_pull_secret(
        "gitea-pull", "istio", NODE_REGISTRY, "gitea_admin", TOKEN, {"kubelab.dev/lesson": "x"}
    )
    assert_valid(secret)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kubelab",
        "kubelab.dev/lesson": "x",
    }
    entry = decoded_config(secret)["auths"][NODE_REGISTRY]
    assert entry["username"] == "gitea_admin" and entry["password"] == TOKEN
    assert base64.b64decode(entry["auth"]).decode() == f"gitea_admin:{TOKEN}"
    assert (
        json.loads(docker_config_json(NODE_REGISTRY, "u", "p"))["auths"][NODE_REGISTRY]["auth"]
        == base64.b64encode(b"u:p").decode()
    )


def test_kaniko_job_args_and_mounts() -> None:
    job = kaniko_job(
        build("v1"),
        namespace="kubelab-build",
        repo_url=REPO_URL,
        destination_registry=CLUSTER_REGISTRY,
        insecure=True,
    )
    assert_valid(job)
    assert job["metadata"]["name"] == "kaniko-app-backend-v1"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == KANIKO_IMAGE == "gcr.io/kaniko-project/executor:v1.23.2"
    assert container["args"] == [
        "--context=git://gitea-http.gitea.svc.cluster.local:3000/kubelab/app-backend.git"
        "#refs/heads/main",
        "--dockerfile=Dockerfile",
        f"--destination={CLUSTER_REGISTRY}/kubelab/app-backend:v1",
        "--build-arg=VERSION=v1",
        "--digest-file=/dev/termination-log",
        "--insecure",
    ]
    assert container["env"] == [{"name": "GIT_PULL_METHOD", "value": "http"}]
    assert container["volumeMounts"] == [
        {"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": True}
    ]
    assert pod["volumes"][0]["secret"] == {
        "secretName": "kubelab-registry-push",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    assert pod["restartPolicy"] == "Never"
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"sidecar.istio.io/inject": "false"}
    assert TOKEN not in json.dumps(job)


def test_kaniko_job_options() -> None:
    job = kaniko_job(
        build("v2"),
        namespace="build",
        repo_url="https://gitea.example.org/kubelab/app-backend",
        git_ref="refs/tags/lesson-1",
        context_sub_path="app_backend",
        skip_tls_verify=True,
        git_credentials_secret="gitea-git",
        labels={"kubelab.dev/lesson": "istio-traffic-splitting"},
    )
    assert_valid(job)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == [
        "--context=git://gitea.example.org/kubelab/app-backend.git#refs/tags/lesson-1",
        "--context-sub-path=app_backend",
    ]
    assert f"--destination={NODE_REGISTRY}/kubelab/app-backend:v2" in container["args"]
    assert "--skip-tls-verify" in container["args"] and "--insecure" not in container["args"]
    assert container["env"][0] == {"name": "GIT_PULL_METHOD", "value": "https"}
    assert container["env"][1]["valueFrom"] == {
        "secretKeyRef": {"name": "gitea-git", "key": "username"}
    }
    assert job["metadata"]["labels"]["kubelab.dev/image-version"] == "v2"


def test_kaniko_objects_for_a_plan() -> None:
    plan = [
        PlannedImage(build("v1"), "skip", "exists"),
        PlannedImage(build("v2"), "build", "missing"),
    ]
    objects = kaniko_objects(
        plan,
        namespace="kubelab-build",
        repo_url=REPO_URL,
        user="gitea_admin",
        token=TOKEN,
        destination_registry=CLUSTER_REGISTRY,
        insecure=True,
    )
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Secret", "kubelab-registry-push"),
        ("Job", "kaniko-app-backend-v2"),
    ]
    for obj in objects:
        assert_valid(obj)
    assert list(decoded_config(objects[0])["auths"]) == [CLUSTER_REGISTRY]
    assert kaniko_objects(plan[:1], namespace="b", repo_url=REPO_URL, user="u", token=TOKEN) == []


def test_git_context_rejects_what_kaniko_cannot_clone() -> None:
    with pytest.raises(UsageError):
        git_context("ssh://git@gitea/kubelab/app.git")
    with pytest.raises(UsageError) as info:
        git_context(f"http://gitea_admin:{TOKEN}@gitea:3000/kubelab/app.git")
    assert TOKEN not in info.value.message


def test_job_names_are_dns_labels() -> None:
    assert job_name("App_Backend", "V1.2") == "kaniko-app-backend-v1-2"
    long = job_name("a" * 80, "v1")
    assert len(long) <= 63 and not long.endswith("-")
