"""The environment of the processes kubelab starts.

An instructor's shell holds cloud credentials (``HCLOUD_TOKEN``, Google's application
default credentials) that none of those processes needs. A student who runs
``kubectl exec -n istio curl-test -- env`` in the sandbox, or a lesson's solve script, must
not see them.

- :func:`for_sandbox`: the sandbox daemon and everything it starts (Envoy, the apps, the
  commands of ``kubectl exec``) get only what a process needs to run on this machine: the
  search path, the home folder, the locale, the terminal, the temporary folder and
  kubelab's own settings; :func:`for_pod` drops the latter for a pod's processes, which
  get the pod's own ``env`` on top.
- :func:`without_credentials`: the caller's environment minus the credentials kubelab reads
  itself, for processes that need the rest of it (a solve script runs kubectl against an
  existing cluster, whose kubeconfig may call the user's own cloud tools).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

# What a program needs from its environment to run at all, and nothing that signs in.
BASICS = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TERM",
        # kubelab run from a source tree finds its packages (and app_backend) through it;
        # a Python built with a shared libpython may need the other two to start at all.
        "PYTHONPATH",
        "PYTHONHOME",
        "LD_LIBRARY_PATH",
        # kubelab.paths puts its state and data there.
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
    }
)
PREFIXES = ("LC_", "KUBELAB_")

# Every credential kubelab reads (the README's table of providers): the Hetzner token, and
# where Google's client library finds its credentials.
GOOGLE = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG")
CREDENTIALS = ("HCLOUD_TOKEN", *GOOGLE)


def for_sandbox(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The basics of ``environ`` (default: this process's environment)."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in BASICS or k.startswith(PREFIXES)}


def for_pod(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a sandbox pod's process starts from: the basics without kubelab's own settings
    (a container on a cluster has none of them either); the pod's ``env`` goes on top."""
    return {k: v for k, v in for_sandbox(environ).items() if not k.startswith("KUBELAB_")}


def without_credentials(
    environ: Mapping[str, str] | None = None, keep: Iterable[str] = ()
) -> dict[str, str]:
    """``environ`` (default: this process's) without the credentials kubelab reads, except
    those in ``keep`` (a GKE kubeconfig's token helper needs Google's)."""
    source = os.environ if environ is None else environ
    dropped = set(CREDENTIALS) - set(keep)
    return {k: v for k, v in source.items() if k not in dropped}
