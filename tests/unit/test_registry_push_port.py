"""The push goes through a port-forward bound to the registry's own port on this machine
(``localhost:30300``, the name the nodes pull by): a busy port is named with its fix."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from kubelab.cluster import portforward
from kubelab.errors import SetupError
from kubelab.images.pipeline import _gitea_forward


class ForwardOnly:
    """A Kube whose port-forward is the real listener (no cluster behind it)."""

    def port_forward(self, namespace: str, target: str, port: int, local_port: int) -> Any:
        return portforward.forward(lambda: None, local_port)  # type: ignore[arg-type,return-value]


def test_a_busy_registry_port_is_named_with_what_to_do() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        forward = _gitea_forward(ForwardOnly(), ("gitea", "gitea-http", 3000), port)  # type: ignore[arg-type]
        with pytest.raises(SetupError) as failed, forward:
            pass
    assert f"cannot listen on 127.0.0.1:{port} for Gitea's registry" in failed.value.message
    assert f"pushed to localhost:{port}" in (failed.value.hint or "")


def test_the_forward_listens_on_the_registry_port_itself() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with _gitea_forward(ForwardOnly(), ("gitea", "gitea-http", 3000), port) as local:  # type: ignore[arg-type]
        assert local == port
