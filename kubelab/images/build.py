"""Plan a lesson's image builds, and run them with the local ``docker`` CLI.

A lesson lists its images (``images: [{name, context, versions, dockerfile, build_arg}]``);
each (image, version) becomes one :class:`ImageBuild` tagged
``<registry>/<org>/<name>:<version>`` and built from the same context with
``--build-arg <build_arg>=<version>``. :func:`plan_images` asks the registry which tags
already exist and marks those ``skip``, so a re-run builds nothing.

Two strategies run a plan:

* ``docker`` (here): ``docker build`` on this machine, then ``docker login
  --password-stdin`` and ``docker push``. The login goes to a throwaway ``DOCKER_CONFIG``
  folder (deleted afterwards, pinned to the same Docker endpoint), so the registry token is
  never on a command line and is not left in ``~/.docker/config.json``.
* ``kaniko`` (:mod:`kubelab.images.kaniko`): Kubernetes Jobs that build from the Gitea
  repository inside the cluster, for machines without a Docker engine.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from kubelab.errors import SetupError

log = logging.getLogger(__name__)

DOCKER_NO_ENGINE_HINT = (
    "start the Docker engine (e.g. `sudo systemctl start docker`, or open Docker Desktop), "
    "or use the kaniko strategy, which builds inside the cluster"
)


class ImageSource(Protocol):
    """What a lesson says about one image (``kubelab.lessons.model.ImageSpec`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def context(self) -> str: ...
    @property
    def dockerfile(self) -> str: ...
    @property
    def versions(self) -> Sequence[str]: ...
    @property
    def build_arg(self) -> str: ...


@dataclass(frozen=True)
class ImageBuild:
    """One tag to produce: ``ref`` built from ``context`` with ``build_arg=version``."""

    name: str
    version: str
    context: Path
    dockerfile: str
    build_arg: str
    registry: str
    org: str

    @property
    def repository(self) -> str:
        """``<org>/<name>``, as the registry names it (Gitea lowercases owners)."""
        return f"{self.org.lower()}/{self.name}"

    @property
    def ref(self) -> str:
        return image_ref(self.registry, self.org, self.name, self.version)


@dataclass(frozen=True)
class PlannedImage:
    """What to do with one tag, and why."""

    build: ImageBuild
    action: Literal["build", "skip"]
    reason: str


def image_ref(registry: str, org: str, name: str, tag: str) -> str:
    """``<registry>/<org>/<name>:<tag>`` (the registry host may carry a port)."""
    return f"{registry.rstrip('/')}/{org.lower()}/{name}:{tag}"


def image_builds(
    images: Iterable[ImageSource], *, project_root: Path, registry: str, org: str
) -> list[ImageBuild]:
    """Every (image, version) of a lesson, in the lesson's order."""
    return [
        ImageBuild(
            name=image.name,
            version=version,
            context=(project_root / image.context).resolve(),
            dockerfile=image.dockerfile,
            build_arg=image.build_arg,
            registry=registry,
            org=org,
        )
        for image in images
        for version in image.versions
    ]


def plan_images(
    builds: Iterable[ImageBuild],
    exists: Callable[[str, str, str], bool],
    *,
    force: bool = False,
) -> list[PlannedImage]:
    """Build or skip for each tag; ``exists(org, image, tag)`` asks the registry.

    ``GiteaClient.tag_exists`` is the usual ``exists``. With ``force`` every tag is built.
    """
    plan: list[PlannedImage] = []
    for build in builds:
        if force:
            plan.append(PlannedImage(build, "build", "rebuild requested"))
        elif exists(build.org, build.name, build.version):
            plan.append(PlannedImage(build, "skip", f"{build.ref} already exists in the registry"))
        else:
            plan.append(PlannedImage(build, "build", f"{build.ref} is not in the registry yet"))
    return plan


def _tail(output: bytes, lines: int = 15) -> str:
    text = output.decode("utf-8", errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


class DockerBuilder:
    """The ``docker`` CLI: preflight, build, login (password on stdin) and push.

    ``mask`` is applied to everything docker prints before it reaches an error message.
    """

    def __init__(
        self,
        docker: str = "docker",
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 1800.0,
        mask: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.docker = docker
        self.env = dict(os.environ if env is None else env)
        self.timeout = timeout
        self._mask = mask

    def _run(
        self,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        command = [self.docker, *args]
        limit = timeout or self.timeout
        log.debug("running %s", shlex.join(command))
        try:
            return subprocess.run(
                command,
                input=stdin if stdin is not None else b"",
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(env or self.env),
                timeout=limit,
                check=False,
            )
        except FileNotFoundError:
            raise SetupError(
                f"{self.docker} is not installed (not found on PATH)",
                hint="install Docker (https://docs.docker.com/engine/install/), or use the "
                "kaniko strategy, which builds inside the cluster",
            ) from None
        except subprocess.TimeoutExpired:
            raise SetupError(
                f"`{shlex.join(command[:3])} ...` did not finish within {limit:g}s",
                hint="check the Docker engine (docker info) and the network, then run again",
            ) from None

    def preflight(self) -> None:
        """Fail fast, with the fix, when docker or its engine is missing."""
        if shutil.which(self.docker, path=self.env.get("PATH")) is None:
            raise SetupError(
                f"{self.docker} is not installed (not found on PATH)",
                hint="install Docker (https://docs.docker.com/engine/install/), or use the "
                "kaniko strategy, which builds inside the cluster",
            )
        done = self._run(["version", "--format", "{{.Server.Version}}"], timeout=60)
        if done.returncode != 0 or not done.stdout.strip():
            reason = _tail(done.stdout, 1) or f"exit {done.returncode}"
            raise SetupError(
                f"docker is installed but cannot reach a Docker engine: {self._mask(reason)}",
                hint=DOCKER_NO_ENGINE_HINT,
            )

    def build_args(self, build: ImageBuild) -> list[str]:
        """The arguments of ``docker build`` for ``build`` (after ``docker``)."""
        args = ["build", "--build-arg", f"{build.build_arg}={build.version}", "-t", build.ref]
        if build.dockerfile != "Dockerfile":
            args += ["-f", str(build.context / build.dockerfile)]
        return [*args, str(build.context)]

    def build(self, build: ImageBuild) -> None:
        args = self.build_args(build)
        done = self._run(args)
        if done.returncode != 0:
            raise SetupError(
                f"docker build of {build.ref} failed (exit {done.returncode}):\n"
                f"{self._mask(_tail(done.stdout))}",
                hint=f"run it by hand to see everything: {shlex.join([self.docker, *args])}",
            )
        log.info("built %s", build.ref)

    def _endpoint_env(self, config_dir: Path) -> dict[str, str]:
        """The environment for login/push: a private DOCKER_CONFIG, same Docker endpoint."""
        env = dict(self.env)
        if "DOCKER_HOST" not in env:
            # Contexts live in the user's DOCKER_CONFIG: pin the endpoint they select.
            done = self._run(
                ["context", "inspect", "--format", "{{.Endpoints.docker.Host}}"], timeout=30
            )
            host = done.stdout.decode("utf-8", errors="replace").strip()
            if done.returncode == 0 and host:
                env["DOCKER_HOST"] = host
        env["DOCKER_CONFIG"] = str(config_dir)
        return env

    def login(self, registry: str, user: str, password: str, config_dir: Path) -> dict[str, str]:
        """``docker login`` with the password on stdin; returns the env to push with."""
        env = self._endpoint_env(config_dir)
        done = self._run(
            ["login", "--username", user, "--password-stdin", registry],
            stdin=password.encode(),
            env=env,
            timeout=120,
        )
        if done.returncode != 0:
            reason = self._mask(_tail(done.stdout, 3).replace(password, "***"))
            raise SetupError(
                f"docker login to {registry} as {user!r} failed: {reason}",
                hint="check that the registry is reachable from this machine and that "
                "docker trusts it (an http registry must be listed under "
                "insecure-registries in /etc/docker/daemon.json)",
            )
        return env

    def push(self, ref: str, env: Mapping[str, str]) -> None:
        done = self._run(["push", ref], env=env)
        if done.returncode != 0:
            raise SetupError(
                f"docker push of {ref} failed (exit {done.returncode}):\n"
                f"{self._mask(_tail(done.stdout))}",
                hint="check the registry's address and that the token can write packages",
            )
        log.info("pushed %s", ref)


def run_docker_plan(
    plan: Iterable[PlannedImage],
    builder: DockerBuilder,
    *,
    registry: str,
    user: str,
    password: str,
    config_dir: Path | None = None,
) -> list[str]:
    """Build every ``build`` entry, then log in once and push them; returns the refs pushed.

    Nothing runs (not even the preflight) when every tag is skipped.
    """
    builds = [p.build for p in plan if p.action == "build"]
    if not builds:
        return []
    builder.preflight()
    for build in builds:
        builder.build(build)
    with tempfile.TemporaryDirectory(prefix="kubelab-docker-") as tmp:
        env = builder.login(registry, user, password, config_dir or Path(tmp))
        for build in builds:
            builder.push(build.ref, env)
    return [b.ref for b in builds]
