"""Processes kubelab starts never get the caller's cloud credentials."""

from __future__ import annotations

from kubelab import childenv
from kubelab.lessons.loader import find_lesson
from kubelab.lessons.solve import solve_env
from kubelab.state import LessonRecord

CALLER = {
    "PATH": "/usr/bin",
    "HOME": "/home/t",
    "LANG": "pt_BR.UTF-8",
    "LC_ALL": "pt_BR.UTF-8",
    "KUBELAB_HOME": "/home/t/.kl",
    "HCLOUD_TOKEN": "secret-1",
    "GOOGLE_APPLICATION_CREDENTIALS": "/keys/g.json",
    "CLOUDSDK_CONFIG": "/home/t/.gcloud",
    "AWS_SECRET_ACCESS_KEY": "secret-2",
    "GITHUB_TOKEN": "secret-3",
    "https_proxy": "http://user:pw@proxy:3128",
}


def test_sandbox_and_pods_get_the_basics_only():
    assert childenv.for_sandbox(CALLER) == {
        "PATH": "/usr/bin",
        "HOME": "/home/t",
        "LANG": "pt_BR.UTF-8",
        "LC_ALL": "pt_BR.UTF-8",
        "KUBELAB_HOME": "/home/t/.kl",
    }
    assert "KUBELAB_HOME" not in childenv.for_pod(CALLER)
    assert childenv.for_pod(CALLER)["PATH"] == "/usr/bin"


def test_other_processes_lose_the_credentials_kubelab_reads():
    env = childenv.without_credentials(CALLER)
    assert not set(childenv.CREDENTIALS) & set(env)
    assert env["AWS_SECRET_ACCESS_KEY"] == "secret-2"  # the user's own kubeconfig may need it
    kept = childenv.without_credentials(CALLER, keep=childenv.GOOGLE)
    assert "HCLOUD_TOKEN" not in kept and kept["CLOUDSDK_CONFIG"] == "/home/t/.gcloud"


def test_solve_scripts_get_no_hetzner_token(monkeypatch):
    for name, value in CALLER.items():
        monkeypatch.setenv(name, value)
    loaded = find_lesson("istio-traffic-splitting")
    exercise = loaded.lesson.exercises[0]
    local = solve_env(
        loaded, exercise, LessonRecord(lesson="l", provider="sandbox", details={"kubeconfig": "k"})
    )
    assert local["KUBECONFIG"] == "k" and local["KUBELAB_EXERCISE"] == exercise.id
    assert not {"HCLOUD_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "https_proxy"} & set(local)
    remote = solve_env(loaded, exercise, LessonRecord(lesson="l", provider="existing"))
    assert "HCLOUD_TOKEN" not in remote
    # kubectl may run a GKE kubeconfig's token helper, which needs Google's credentials.
    assert remote["GOOGLE_APPLICATION_CREDENTIALS"] == "/keys/g.json"
