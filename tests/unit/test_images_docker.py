"""The ``docker`` strategy against a fake ``docker`` executable on PATH.

The fake records, for every call, its arguments, what it read on stdin and its
environment, so the tests prove the exact commands, that the registry password travels on
stdin only (never in an argument or an environment variable), and that login and push use
a private, throwaway ``DOCKER_CONFIG``. The real ``docker`` CLI of the machine is used
for one check: without an engine, the preflight says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubelab.errors import SetupError
from kubelab.images.build import (
    DockerBuilder,
    ImageBuild,
    PlannedImage,
    image_builds,
    plan_images,
    run_docker_plan,
)
from kubelab.lessons.loader import load_lesson

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app_backend"
REGISTRY = "127.0.0.1:30300"
USER = "gitea_admin"
PASSWORD = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"

FAKE_DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read()
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "stdin": stdin, "env": dict(os.environ)}}) + "\\n")
if args[:1] == ["version"]:
    if os.environ.get("FAKE_DOCKER_NO_ENGINE"):
        print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
              "Is the docker daemon running?", file=sys.stderr)
        sys.exit(1)
    print("27.3.1")
elif args[:2] == ["context", "inspect"]:
    print("unix:///run/user/1000/docker.sock")
elif args[:1] == ["login"]:
    if os.environ.get("FAKE_DOCKER_LOGIN_FAIL"):
        print("Error response from daemon: login attempt with " + stdin + " failed: unauthorized")
        sys.exit(1)
    with open(os.path.join(os.environ["DOCKER_CONFIG"], "config.json"), "w") as config:
        json.dump({{"auths": {{args[-1]: {{"auth": "x"}}}}}}, config)
    print("Login Succeeded")
elif args[:1] == ["build"]:
    if os.environ.get("FAKE_DOCKER_BUILD_FAIL"):
        print("#7 [builder 3/6] RUN pip install")
        print("ERROR: failed to solve: process did not complete successfully: exit code: 1")
        sys.exit(1)
    print("naming to " + args[args.index("-t") + 1] + " done")
elif args[:1] == ["push"]:
    config = os.path.join(os.environ.get("DOCKER_CONFIG", ""), "config.json")
    if not os.path.exists(config):
        print("no basic auth credentials")
        sys.exit(1)
    print(args[1].rsplit(":", 1)[1] + ": digest: sha256:abc size: 1234")
else:
    sys.exit(2)
"""


@pytest.fixture
def fake_docker(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH finds the fake docker first; its log is FAKE_DOCKER_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "FAKE_DOCKER_LOG": str(tmp_path / "docker.log"),
    }
    return env


def calls(env: dict[str, str]) -> list[dict[str, Any]]:
    path = Path(env["FAKE_DOCKER_LOG"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def builds(*versions: str, dockerfile: str = "Dockerfile") -> list[ImageBuild]:
    return [
        ImageBuild("app-backend", v, APP, dockerfile, "VERSION", REGISTRY, "kubelab")
        for v in versions
    ]


def to_build(items: list[ImageBuild]) -> list[PlannedImage]:
    return [PlannedImage(b, "build", "not in the registry yet") for b in items]


def test_docker_strategy_runs_the_exact_commands(fake_docker: dict[str, str]) -> None:
    builder = DockerBuilder(env=fake_docker)
    pushed = run_docker_plan(
        to_build(builds("v1", "v2")), builder, registry=REGISTRY, user=USER, password=PASSWORD
    )
    v1, v2 = f"{REGISTRY}/kubelab/app-backend:v1", f"{REGISTRY}/kubelab/app-backend:v2"
    assert pushed == [v1, v2]
    seen = calls(fake_docker)
    assert [c["argv"] for c in seen] == [
        ["version", "--format", "{{.Server.Version}}"],
        ["build", "--build-arg", "VERSION=v1", "-t", v1, str(APP)],
        ["build", "--build-arg", "VERSION=v2", "-t", v2, str(APP)],
        ["context", "inspect", "--format", "{{.Endpoints.docker.Host}}"],
        ["login", "--username", USER, "--password-stdin", REGISTRY],
        ["push", v1],
        ["push", v2],
    ]
    # The password went to `docker login` on stdin, and nowhere else.
    for call in seen:
        assert PASSWORD not in " ".join(call["argv"])
        assert all(PASSWORD not in value for value in call["env"].values())
        assert call["stdin"] == (PASSWORD if call["argv"][0] == "login" else "")
    # Builds use the user's docker setup; login and push a private config on the same engine.
    login, push_v1, push_v2 = seen[4], seen[5], seen[6]
    assert all("DOCKER_CONFIG" not in c["env"] for c in seen[:4])
    config_dir = login["env"]["DOCKER_CONFIG"]
    assert push_v1["env"]["DOCKER_CONFIG"] == push_v2["env"]["DOCKER_CONFIG"] == config_dir
    assert login["env"]["DOCKER_HOST"] == "unix:///run/user/1000/docker.sock"
    assert not Path(config_dir).exists()  # the stored login is gone


def test_an_explicit_docker_host_is_kept(fake_docker: dict[str, str]) -> None:
    env = {**fake_docker, "DOCKER_HOST": "tcp://127.0.0.1:2375"}
    builder = DockerBuilder(env=env)
    run_docker_plan(
        to_build(builds("v1")), builder, registry=REGISTRY, user=USER, password=PASSWORD
    )
    seen = calls(fake_docker)
    assert ["context", "inspect", "--format", "{{.Endpoints.docker.Host}}"] not in [
        c["argv"] for c in seen
    ]
    assert {c["env"]["DOCKER_HOST"] for c in seen} == {"tcp://127.0.0.1:2375"}


def test_a_non_default_dockerfile_is_passed_with_f(fake_docker: dict[str, str]) -> None:
    builder = DockerBuilder(env=fake_docker)
    (build,) = builds("v1", dockerfile="Dockerfile.dev")
    assert builder.build_args(build) == [
        "build",
        "--build-arg",
        "VERSION=v1",
        "-t",
        f"{REGISTRY}/kubelab/app-backend:v1",
        "-f",
        str(APP / "Dockerfile.dev"),
        str(APP),
    ]


def test_nothing_runs_when_every_tag_exists(fake_docker: dict[str, str]) -> None:
    plan = [PlannedImage(b, "skip", "exists") for b in builds("v1", "v2")]
    builder = DockerBuilder(env={**fake_docker, "FAKE_DOCKER_NO_ENGINE": "1"})
    assert run_docker_plan(plan, builder, registry=REGISTRY, user=USER, password=PASSWORD) == []
    assert calls(fake_docker) == []


def test_preflight_says_when_docker_has_no_engine(fake_docker: dict[str, str]) -> None:
    builder = DockerBuilder(env={**fake_docker, "FAKE_DOCKER_NO_ENGINE": "1"})
    with pytest.raises(SetupError) as info:
        run_docker_plan(
            to_build(builds("v1")), builder, registry=REGISTRY, user=USER, password=PASSWORD
        )
    assert "cannot reach a Docker engine" in info.value.message
    assert "Is the docker daemon running?" in info.value.message
    assert "kaniko" in (info.value.hint or "")
    assert [c["argv"][0] for c in calls(fake_docker)] == ["version"]  # nothing else ran


def test_preflight_says_when_docker_is_missing(tmp_path: Path) -> None:
    builder = DockerBuilder(env={"PATH": str(tmp_path)})
    with pytest.raises(SetupError) as info:
        builder.preflight()
    assert "docker is not installed" in info.value.message
    assert "kaniko" in (info.value.hint or "")


def test_preflight_with_the_real_docker_cli_and_no_engine() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    probe = subprocess.run(
        [docker, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if probe.returncode == 0:
        pytest.skip("this machine has a Docker engine")
    with pytest.raises(SetupError) as info:
        DockerBuilder().preflight()
    assert "cannot reach a Docker engine" in info.value.message


def test_failed_login_hides_the_password(fake_docker: dict[str, str]) -> None:
    builder = DockerBuilder(env={**fake_docker, "FAKE_DOCKER_LOGIN_FAIL": "1"})
    with pytest.raises(SetupError) as info:
        run_docker_plan(
            to_build(builds("v1")), builder, registry=REGISTRY, user=USER, password=PASSWORD
        )
    assert f"docker login to {REGISTRY} as 'gitea_admin' failed" in info.value.message
    assert "unauthorized" in info.value.message
    assert PASSWORD not in info.value.message and PASSWORD not in (info.value.hint or "")
    assert "push" not in [c["argv"][0] for c in calls(fake_docker)]


def test_failed_build_shows_the_end_of_the_output(fake_docker: dict[str, str]) -> None:
    builder = DockerBuilder(env={**fake_docker, "FAKE_DOCKER_BUILD_FAIL": "1"})
    with pytest.raises(SetupError) as info:
        run_docker_plan(
            to_build(builds("v1")), builder, registry=REGISTRY, user=USER, password=PASSWORD
        )
    assert "docker build of 127.0.0.1:30300/kubelab/app-backend:v1 failed (exit 1)" in (
        info.value.message
    )
    assert "failed to solve" in info.value.message
    assert "docker build --build-arg VERSION=v1" in (info.value.hint or "")
    assert "login" not in [c["argv"][0] for c in calls(fake_docker)]  # no login after a failure


def test_plan_skips_the_tags_the_registry_has() -> None:
    loaded = load_lesson(ROOT / "labs" / "istio-traffic-splitting")
    all_builds = image_builds(
        loaded.lesson.images, project_root=ROOT, registry=REGISTRY, org="KubeLab"
    )
    assert [(b.name, b.version, b.context, b.build_arg) for b in all_builds] == [
        ("app-backend", "v1", APP, "VERSION"),
        ("app-backend", "v2", APP, "VERSION"),
    ]
    asked: list[tuple[str, str, str]] = []

    def exists(org: str, image: str, tag: str) -> bool:
        asked.append((org, image, tag))
        return tag == "v1"

    plan = plan_images(all_builds, exists)
    assert [(p.build.ref, p.action) for p in plan] == [
        (f"{REGISTRY}/kubelab/app-backend:v1", "skip"),
        (f"{REGISTRY}/kubelab/app-backend:v2", "build"),
    ]
    assert plan[0].reason == f"{REGISTRY}/kubelab/app-backend:v1 already exists in the registry"
    assert plan[1].reason == f"{REGISTRY}/kubelab/app-backend:v2 is not in the registry yet"
    assert asked == [("KubeLab", "app-backend", "v1"), ("KubeLab", "app-backend", "v2")]
    forced = plan_images(all_builds, exists, force=True)
    assert [p.action for p in forced] == ["build", "build"]
