"""The wait for an in-cluster image build (kaniko Job), against the real Job controller:
a failed build pod is retried as the Job's ``backoffLimit`` allows, and only the Job
controller giving up fails the images step, naming the last failed pod's log."""

from __future__ import annotations

from pathlib import Path

import pytest
from nodeagent import EXIT_ANNOTATION

from kubelab.errors import SetupError
from kubelab.images.build import ImageBuild
from kubelab.images.kaniko import kaniko_job
from kubelab.images.pipeline import _job_finished

pytestmark = pytest.mark.timeout(180)


def _build() -> ImageBuild:
    return ImageBuild(
        name="app-backend",
        version="v1",
        registry="localhost:30300",
        org="kubelab",
        context=Path("app_backend"),
        dockerfile="Dockerfile",
        build_arg="APP_VERSION",
    )


def test_a_failed_build_pod_is_retried_before_the_step_fails(  # type: ignore[no-untyped-def]
    control_plane, namespace: str
) -> None:
    kube = control_plane.kube()
    job = kaniko_job(
        _build(),
        namespace=namespace,
        repo_url="http://localhost:30300/kubelab/istio-traffic-splitting.git",
        insecure=True,
        host_network=True,
        backoff_limit=1,
    )
    # Every build pod of this Job exits 1 (the node agent ends it so).
    job["spec"]["template"]["metadata"]["annotations"][EXIT_ANNOTATION] = "1"
    kube.apply(job)
    name = job["metadata"]["name"]
    with pytest.raises(SetupError) as failed:
        kube.wait_for(
            lambda: _job_finished(kube, name, namespace), timeout=120, what=f"job/{name}", poll=0.05
        )
    # The wait ended only once the retry had failed too, not at the first failed pod: the
    # message counts the failures of the very Job status that had the Failed condition (a
    # count read separately before it may still say 1).
    pods = kube.list("v1", "Pod", namespace, f"job-name={name}")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    message = failed.value.message
    assert "failed after 2 attempts (BackoffLimitExceeded" in message, message
    # The hint names a failed build pod's log (the last one started).
    hint = failed.value.hint or ""
    assert hint.startswith(f"The build's log: kubectl logs -n {namespace} pod/"), hint
    assert hint.rsplit("/", 1)[1] in {p["metadata"]["name"] for p in pods}
