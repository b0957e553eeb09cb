"""The ``kaniko`` strategy: build images inside the cluster, from the Gitea repository.

Pure functions that return Kubernetes objects as dicts; ``kubelab.cluster`` applies them
and waits for the Jobs. Per run:

* a Secret of type ``kubernetes.io/dockerconfigjson`` with the registry credentials,
  mounted into each build pod as ``/kaniko/.docker/config.json`` (kaniko reads its push
  credentials there);
* one Job per tag to build, running ``gcr.io/kaniko-project/executor`` (pinned) with
  ``--context=git://<gitea>/<org>/<repo>.git#refs/heads/main`` (kaniko clones it itself;
  ``GIT_PULL_METHOD=http`` when Gitea is reached over plain HTTP in the cluster),
  ``--dockerfile``, ``--destination`` and ``--build-arg <arg>=<version>``. The image digest
  is written to the pod's termination message (``--digest-file=/dev/termination-log``).

:func:`registry_pull_secret` renders the same kind of Secret for the lesson's namespace,
named in the app chart's ``image.pullSecrets``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from kubelab.errors import UsageError
from kubelab.images.build import ImageBuild, PlannedImage, image_ref

# The last release of the upstream project (archived in 2025); pinned, never :latest.
KANIKO_IMAGE = "gcr.io/kaniko-project/executor:v1.23.2"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubelab"}
IMAGE_LABEL = "kubelab.dev/image"
VERSION_LABEL = "kubelab.dev/image-version"
PUSH_SECRET = "kubelab-registry-push"
DOCKER_CONFIG_DIR = "/kaniko/.docker"
_INVALID_NAME_CHARS = re.compile(r"[^a-z0-9-]+")


def docker_config_json(registry: str, user: str, token: str) -> str:
    """A docker ``config.json`` holding one registry's credentials."""
    auth = base64.b64encode(f"{user}:{token}".encode()).decode()
    config = {"auths": {registry: {"username": user, "password": token, "auth": auth}}}
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def registry_pull_secret(
    name: str,
    namespace: str,
    registry: str,
    user: str,
    token: str,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ``kubernetes.io/dockerconfigjson`` Secret for ``registry`` (an imagePullSecret)."""
    encoded = base64.b64encode(docker_config_json(registry, user, token).encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, **(labels or {})},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": encoded},
    }


def git_context(repo_url: str, ref: str = "refs/heads/main") -> tuple[str, str]:
    """kaniko's ``--context`` for a repository URL, and the ``GIT_PULL_METHOD`` it needs.

    ``http://gitea-http.gitea.svc:3000/kubelab/app-backend.git`` gives
    ``git://gitea-http.gitea.svc:3000/kubelab/app-backend.git#refs/heads/main`` and
    ``http`` (kaniko clones over https unless told otherwise).
    """
    parts = urlsplit(repo_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"cannot build from {repo_url!r}: kaniko clones http(s) URLs only",
            hint="give the repository's in-cluster URL, e.g. "
            "http://gitea-http.gitea.svc.cluster.local:3000/kubelab/app-backend.git",
        )
    if "@" in parts.netloc:
        raise UsageError(
            "the repository URL must not carry credentials",
            hint="pass them as a Secret (git_credentials_secret) instead",
        )
    path = parts.path if parts.path.endswith(".git") else parts.path.rstrip("/") + ".git"
    return f"git://{parts.netloc}{path}#{ref}", parts.scheme


def job_name(image: str, version: str, prefix: str = "kaniko") -> str:
    """A valid Job name (DNS label, at most 63 characters) for one tag."""
    name = _INVALID_NAME_CHARS.sub("-", f"{prefix}-{image}-{version}".lower()).strip("-")
    return name[:63].rstrip("-")


def kaniko_job(
    build: ImageBuild,
    *,
    namespace: str,
    repo_url: str,
    git_ref: str = "refs/heads/main",
    context_sub_path: str = "",
    secret_name: str = PUSH_SECRET,
    destination_registry: str | None = None,
    insecure: bool = False,
    skip_tls_verify: bool = False,
    git_credentials_secret: str | None = None,
    image: str = KANIKO_IMAGE,
    labels: Mapping[str, str] | None = None,
    backoff_limit: int = 1,
    active_deadline_seconds: int = 1200,
    ttl_seconds_after_finished: int = 3600,
    host_network: bool = False,
) -> dict[str, Any]:
    """The Job that builds ``build`` with kaniko and pushes it.

    ``destination_registry`` is the registry address as seen from inside the cluster when
    it differs from the one in ``build.ref`` (the address nodes pull from). ``insecure``
    pushes over plain HTTP; ``git_credentials_secret`` (keys ``username``/``password``) is
    only needed for a private repository. ``host_network`` runs the build on the node's
    network, where ``localhost:<NodePort>`` reaches the registry as the nodes see it.
    """
    context, pull_method = git_context(repo_url, git_ref)
    destination = (
        image_ref(destination_registry, build.org, build.name, build.version)
        if destination_registry
        else build.ref
    )
    args = [f"--context={context}"]
    if context_sub_path:
        args.append(f"--context-sub-path={context_sub_path}")
    args += [
        f"--dockerfile={build.dockerfile}",
        f"--destination={destination}",
        f"--build-arg={build.build_arg}={build.version}",
        "--digest-file=/dev/termination-log",
    ]
    if insecure:
        args.append("--insecure")
    if skip_tls_verify:
        args.append("--skip-tls-verify")
    env: list[dict[str, Any]] = [{"name": "GIT_PULL_METHOD", "value": pull_method}]
    if git_credentials_secret:
        env += [
            {
                "name": variable,
                "valueFrom": {"secretKeyRef": {"name": git_credentials_secret, "key": key}},
            }
            for variable, key in (("GIT_USERNAME", "username"), ("GIT_PASSWORD", "password"))
        ]
    all_labels = {
        **MANAGED_BY,
        **(labels or {}),
        IMAGE_LABEL: build.name,
        VERSION_LABEL: build.version,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(build.name, build.version),
            "namespace": namespace,
            "labels": all_labels,
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": active_deadline_seconds,
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            "template": {
                "metadata": {
                    "labels": dict(all_labels),
                    # A mesh sidecar would keep the pod running after kaniko exits.
                    "annotations": {"sidecar.istio.io/inject": "false"},
                },
                "spec": {
                    "restartPolicy": "Never",
                    **(
                        {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}
                        if host_network
                        else {}
                    ),
                    "containers": [
                        {
                            "name": "kaniko",
                            "image": image,
                            "args": args,
                            "env": env,
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"memory": "2Gi"},
                            },
                            "terminationMessagePolicy": "File",
                            "volumeMounts": [
                                {
                                    "name": "docker-config",
                                    "mountPath": DOCKER_CONFIG_DIR,
                                    "readOnly": True,
                                }
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "docker-config",
                            "secret": {
                                "secretName": secret_name,
                                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                            },
                        }
                    ],
                },
            },
        },
    }


def kaniko_objects(
    plan: Iterable[PlannedImage],
    *,
    namespace: str,
    repo_url: str,
    user: str,
    token: str,
    destination_registry: str | None = None,
    secret_name: str = PUSH_SECRET,
    labels: Mapping[str, str] | None = None,
    **job_options: Any,
) -> list[dict[str, Any]]:
    """The push Secret and one Job per ``build`` entry of ``plan``; [] when all are skipped.

    The Secret's registry key is the address kaniko pushes to (``destination_registry``,
    else each build's registry). Extra keyword arguments go to :func:`kaniko_job`.
    """
    builds = [p.build for p in plan if p.action == "build"]
    if not builds:
        return []
    registries = sorted({destination_registry or b.registry for b in builds})
    if len(registries) != 1:
        raise UsageError(
            f"kaniko pushes to one registry per run, got {', '.join(registries)}",
            hint="build the images of each registry in a separate run",
        )
    secret = registry_pull_secret(secret_name, namespace, registries[0], user, token, labels)
    jobs = [
        kaniko_job(
            build,
            namespace=namespace,
            repo_url=repo_url,
            secret_name=secret_name,
            destination_registry=destination_registry,
            labels=labels,
            **job_options,
        )
        for build in builds
    ]
    return [secret, *jobs]
