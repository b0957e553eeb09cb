"""The images step of ``kubelab up`` on a real cluster: Gitea, then build and push.

Everything names the registry by one address, the provider's
:class:`~kubelab.cluster.facts.RegistryAccess` (``localhost:<Gitea NodePort>``): the image
references, the pull Secret, Gitea's ROOT_URL (the registry's token realm), the push and
the in-cluster build. Gitea is reached through a port-forward to its HTTP Service bound to
that same local port, so ``docker push`` and its token request resolve here as they do on
the nodes (kind maps the port to the host instead). Its admin password comes from the
Secret kubelab created before installing it, and the access token made here is kept in a
Secret beside it so a re-run reuses it. The app's source goes into the lesson's
repository, and each (image, version) the registry does not have yet is built: with the
local Docker engine when there is one, else in the cluster with kaniko (a Job on the
node's network cloning that repository). The lesson's namespace gets an image pull Secret
for the registry.
"""

from __future__ import annotations

import base64
import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from kubelab import paths
from kubelab.cluster.facts import RegistryAccess
from kubelab.cluster.kube import Kube, kubelab_labels
from kubelab.cluster.portforward import PortForwardError
from kubelab.components import catalog
from kubelab.components.values import InstallSettings
from kubelab.errors import SetupError
from kubelab.k8s.workloads import Pending
from kubelab.lessons.model import Lesson

ORG = "kubelab"
TOKEN_SECRET = "kubelab-gitea-token"
PULL_SECRET = "kubelab-registry"
JOB_TIMEOUT = 900.0


def _secret_data(kube: Kube, name: str, namespace: str) -> dict[str, str]:
    secret = kube.get("v1", "Secret", name, namespace) or {}
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _gitea_admin(
    kube: Kube, settings: InstallSettings
) -> tuple[tuple[str, str, int], dict[str, str]]:
    """Gitea's (namespace, service, port) and its admin credentials (else a clear error)."""
    gitea = catalog.CATALOG["gitea"]
    assert gitea.api is not None
    namespace = gitea.api[0]
    admin = _secret_data(kube, settings.gitea_admin_secret, namespace)
    if not admin.get("password"):
        raise SetupError(
            f"Gitea's admin Secret {namespace}/{settings.gitea_admin_secret} is missing",
            hint="Run `kubelab up` again: the components step creates it before Gitea.",
        )
    return gitea.api, admin


@contextlib.contextmanager
def _gitea_forward(kube: Kube, service: tuple[str, str, int], local_port: int) -> Iterator[int]:
    """A port-forward to Gitea on ``local_port`` (0: any), naming a busy port's fix."""
    namespace, name, port = service
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(
                kube.port_forward(namespace, f"svc/{name}", port, local_port)
            )
        except PortForwardError as exc:
            # Only the listener here failing (its cause an OSError), not a missing pod.
            if not local_port or not isinstance(exc.__cause__, OSError):
                raise
            reason = exc.__cause__.strerror or exc.__cause__
            raise SetupError(
                f"cannot listen on 127.0.0.1:{local_port} for Gitea's registry: {reason}",
                hint=f"The images are pushed to localhost:{local_port}, the address the "
                "nodes pull from. Stop what uses that port here (`ss -ltnp 'sport = "
                f":{local_port}'`; a kind cluster maps it), then run `kubelab up` again.",
            ) from None
        yield local


def build_lesson_images(
    lesson: Lesson, kube: Kube, settings: InstallSettings, registry: RegistryAccess
) -> list[str]:
    """Configure Gitea and make sure every image of ``lesson`` is in ``registry``."""
    if not lesson.images:
        return []
    from kubelab.images.build import DockerBuilder, image_builds, plan_images, run_docker_plan
    from kubelab.images.gitea import GiteaClient, GiteaSetup, configure_gitea

    (namespace, service, port), admin = _gitea_admin(kube, settings)
    lines: list[str] = []
    local_port = registry.node_port if registry.push_via_forward else 0
    with _gitea_forward(kube, (namespace, service, port), local_port) as local:
        client = GiteaClient(f"http://127.0.0.1:{local}", admin["username"], admin["password"])
        stored = _secret_data(kube, TOKEN_SECRET, namespace).get("token")
        source = paths.data_root() / lesson.images[0].context
        result = configure_gitea(client, GiteaSetup(org=ORG, repo=lesson.id, source=source), stored)
        if result.token != stored:
            kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": TOKEN_SECRET, "namespace": namespace},
                    "type": "Opaque",
                    "stringData": {"token": result.token},
                }
            )
        lines += [f"gitea: {change}" for change in result.changes()]
        builds = image_builds(
            lesson.images, project_root=paths.data_root(), registry=registry.host, org=ORG
        )
        plan = plan_images(builds, client.tag_exists)
        to_build = [p for p in plan if p.action == "build"]
        lines += [p.reason for p in plan if p.action == "skip"]
        if to_build:
            builder = DockerBuilder(mask=client.mask)
            try:
                builder.preflight()
                use_docker = True
            except SetupError:
                use_docker = False
            if use_docker:
                pushed = run_docker_plan(
                    plan,
                    builder,
                    registry=registry.host,
                    user=admin["username"],
                    password=result.token,
                )
                lines += [f"built and pushed {ref}" for ref in pushed]
            else:
                repo_url = f"http://{registry.host}/{ORG}/{lesson.id}.git"
                lines += _kaniko(kube, plan, namespace, repo_url, admin["username"], result.token)
    _pull_secret(kube, lesson, registry.host, admin["username"], result.token)
    return lines


def _kaniko(
    kube: Kube, plan: list[Any], namespace: str, repo_url: str, user: str, token: str
) -> list[str]:
    """Build ``plan`` with kaniko Jobs cloning ``repo_url`` (the repository configure_gitea
    made) and pushing to the registry address; each on the node's network, where that
    address (``localhost:<NodePort>``) is Gitea as it is for the container runtime."""
    from kubelab.images.kaniko import kaniko_objects

    objects = kaniko_objects(
        plan,
        namespace=namespace,
        repo_url=repo_url,
        user=user,
        token=token,
        insecure=True,
        host_network=True,
    )
    jobs = [o for o in objects if o["kind"] == "Job"]
    for job in jobs:
        # A Job's template cannot change: an earlier build's Job goes first.
        kube.delete("batch/v1", "Job", job["metadata"]["name"], namespace)
    kube.apply_all(objects)
    for job in jobs:
        name = job["metadata"]["name"]
        kube.wait_for(
            functools.partial(_job_finished, kube, name, namespace),
            timeout=JOB_TIMEOUT,
            what=f"job/{name}",
            namespace=namespace,
        )
    return [f"built {job['metadata']['name']} in the cluster (kaniko)" for job in jobs]


def _job_finished(kube: Kube, name: str, namespace: str) -> bool | Pending:
    """True once the Job succeeded; Pending while it runs or retries a failed pod (as its
    ``backoffLimit`` allows); a SetupError naming the last failed pod's log once the Job
    controller gave up (condition Failed)."""
    job = kube.get("batch/v1", "Job", name, namespace) or {}
    status = job.get("status") or {}
    if status.get("succeeded"):
        return True
    failed = int(status.get("failed") or 0)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            pods = kube.list("v1", "Pod", namespace, f"job-name={name}")
            dead = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
            dead.sort(key=lambda p: str((p.get("status") or {}).get("startTime") or ""))
            where = f"pod/{dead[-1]['metadata']['name']}" if dead else f"job/{name}"
            reason = condition.get("reason") or "Failed"
            raise SetupError(
                f"image build job {namespace}/{name} failed after {failed} "
                f"attempt{'s' if failed != 1 else ''} ({reason}: {condition.get('message')})",
                hint=f"The build's log: kubectl logs -n {namespace} {where}",
            )
    if failed:
        limit = int((job.get("spec") or {}).get("backoffLimit", 6))
        return Pending(f"attempt {failed + 1} of {limit + 1} after a failed build pod")
    return Pending("the build is still running")


def _pull_secret(kube: Kube, lesson: Lesson, registry: str, user: str, token: str) -> None:
    from kubelab.images.kaniko import registry_pull_secret

    labels = kubelab_labels(lesson.id)
    for namespace in {ns.name for ns in lesson.namespaces} | {d.namespace for d in lesson.deploy}:
        if kube.get("v1", "Namespace", namespace) is None:
            # Only when missing: the deploy step applies the namespace with its labels
            # (istio-injection). Applying this bare one over it, as the same field manager,
            # would drop them until the deploy step puts them back.
            kube.apply(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                labels=labels,
            )
        kube.apply(
            registry_pull_secret(PULL_SECRET, namespace, registry, user, token), labels=labels
        )


PULL_TOKEN_SECRET = "kubelab-gitea-pull-token"
PULL_TOKEN_NAME = "kubelab-pull"


def read_only_pull_token(kube: Kube, settings: InstallSettings) -> tuple[str, str]:
    """(user, token) allowed to pull the course's images and nothing else (Gitea scope
    ``read:package``), for namespaces whose users must not get the build token (a class's
    students could read any Secret their pods mount). Stored in a Secret beside Gitea and
    reused while it works, so a second call changes nothing."""
    from kubelab.images.gitea import GiteaClient

    (namespace, service, port), admin = _gitea_admin(kube, settings)
    stored = _secret_data(kube, PULL_TOKEN_SECRET, namespace).get("token")
    with kube.port_forward(namespace, f"svc/{service}", port) as local:
        client = GiteaClient(f"http://127.0.0.1:{local}", admin["username"], admin["password"])
        # Probed where read:package suffices: GET /user would answer 403 (read:user) and
        # replacing the token would revoke the copies in earlier students' namespaces.
        if stored and client.token_works(stored, f"/packages/{ORG}"):
            return admin["username"], stored
        token = client.ensure_token(PULL_TOKEN_NAME, ("read:package",))
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": PULL_TOKEN_SECRET, "namespace": namespace},
            "type": "Opaque",
            "stringData": {"token": token},
        }
    )
    return admin["username"], token
