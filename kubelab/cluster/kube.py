"""Reading a Kubernetes API with the official client: get, list, exec, service proxy.

Everything kubelab reads from a cluster (checks, status) goes through :class:`Kube`. It
hides the client's shape (dynamic discovery of kinds, exec over websockets, the API
server's service proxy) and turns transport failures into kubelab errors that say which
cluster could not be reached. The ``kubernetes`` package is imported on first use only.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelab.errors import KubelabError, SetupError

FIELD_MANAGER = "kubelab"


class ClusterUnreachable(SetupError):
    """The API server did not answer (down, wrong address, expired credentials)."""


class KindNotServed(KubelabError):
    """The cluster does not serve this kind (its CRD is not installed)."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


class Kube:
    """A connection to one cluster, from a kubeconfig file (and optional context)."""

    def __init__(
        self, kubeconfig: Path | None = None, context: str | None = None, timeout: float = 15.0
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.timeout = timeout
        self._api_client: Any = None
        self._dynamic: Any = None
        self._lock = threading.Lock()

    # -- clients ---------------------------------------------------------------------------

    def api_client(self) -> Any:
        with self._lock:
            if self._api_client is None:
                from kubernetes import config

                try:
                    self._api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                        config_file=str(self.kubeconfig) if self.kubeconfig else None,
                        context=self.context,
                    )
                except (config.ConfigException, OSError, TypeError, ValueError) as exc:
                    where = self.kubeconfig or "the default kubeconfig"
                    raise SetupError(
                        f"cannot use {where}: {exc}",
                        hint="Check KUBECONFIG, or run `kubelab status` to see the lesson's "
                        "kubeconfig.",
                    ) from exc
            return self._api_client

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic import DynamicClient
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        client = self.api_client()
        with self._lock:
            if self._dynamic is None:
                self._dynamic = self._call(
                    lambda: DynamicClient(client)  # type: ignore[no-untyped-call]
                )
        try:
            return self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise KindNotServed(
                f"the cluster does not serve {kind} ({api_version})",
                hint="Is the component that defines it installed? `kubelab status`",
            ) from None

    def _call(self, fn: Any) -> Any:
        """Run ``fn`` turning transport errors into :class:`ClusterUnreachable`."""
        import urllib3

        try:
            return fn()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            host = getattr(self.api_client().configuration, "host", "the cluster")
            raise ClusterUnreachable(
                f"cannot reach the Kubernetes API at {host}: {type(exc).__name__}",
                hint="Is the cluster (or the sandbox) running? `kubelab status` tells.",
            ) from exc

    # -- reading ---------------------------------------------------------------------------

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        resource = self._resource(api_version, kind)
        try:
            obj = self._call(
                lambda: resource.get(name=name, namespace=namespace, _request_timeout=self.timeout)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._api_error(exc, f"{kind} {name}") from exc
        result: dict[str, Any] = obj.to_dict()
        return result

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str = "",
    ) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        resource = self._resource(api_version, kind)
        try:
            result = self._call(
                lambda: resource.get(
                    namespace=namespace,
                    label_selector=label_selector or None,
                    _request_timeout=self.timeout,
                )
            )
        except ApiException as exc:
            raise self._api_error(exc, f"{kind} list") from exc
        items: list[dict[str, Any]] = result.to_dict().get("items") or []
        return items

    # -- writing ---------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any], field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply ``obj`` (created when missing, else merged; kubelab owns it)."""
        from kubernetes.client.exceptions import ApiException

        meta = obj.get("metadata") or {}
        resource = self._resource(obj["apiVersion"], obj["kind"])
        try:
            result = self._call(
                lambda: resource.server_side_apply(
                    body=obj,
                    name=meta["name"],
                    namespace=meta.get("namespace") if resource.namespaced else None,
                    field_manager=field_manager,
                    force_conflicts=True,
                    _request_timeout=self.timeout,
                )
            )
        except ApiException as exc:
            raise self._api_error(exc, f"{obj['kind']} {meta.get('name')}") from exc
        applied: dict[str, Any] = result.to_dict()
        return applied

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object; False when it was already gone."""
        from kubernetes.client.exceptions import ApiException

        resource = self._resource(api_version, kind)
        try:
            self._call(
                lambda: resource.delete(
                    name=name,
                    namespace=namespace if resource.namespaced else None,
                    _request_timeout=self.timeout,
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise self._api_error(exc, f"{kind} {name}") from exc
        return True

    def _api_error(self, exc: Any, what: str) -> KubelabError:
        if exc.status in (401, 403):
            return SetupError(
                f"the cluster refused to show {what} ({exc.status} {exc.reason})",
                hint="Your credentials may have expired or lack rights; ask the instructor.",
            )
        detail = ""
        try:
            import json

            detail = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            pass
        message = f"the cluster answered {exc.status} {exc.reason} for {what}"
        return KubelabError(f"{message}: {detail}" if detail else message)

    # -- exec and proxy --------------------------------------------------------------------

    def exec(
        self,
        namespace: str,
        pod: str,
        command: builtins.list[str],
        container: str | None = None,
        timeout: float = 60.0,
    ) -> ExecResult:
        """Run ``command`` in a pod's container and collect its output and exit code."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        core = client.CoreV1Api(self.api_client())
        kwargs: dict[str, Any] = {
            "command": command,
            "stderr": True,
            "stdin": False,
            "stdout": True,
            "tty": False,
            "_preload_content": False,
        }
        if container:
            kwargs["container"] = container
        try:
            resp = self._call(
                lambda: stream(core.connect_get_namespaced_pod_exec, pod, namespace, **kwargs)
            )
        except ApiException as exc:
            raise self._api_error(exc, f"exec in pod {namespace}/{pod}") from exc
        out: list[str] = []
        err: list[str] = []
        try:
            resp.run_forever(timeout=timeout)
            out.append(resp.read_stdout() or "")
            err.append(resp.read_stderr() or "")
            code = resp.returncode
        finally:
            resp.close()
        return ExecResult(code if code is not None else -1, "".join(out), "".join(err))

    def service_proxy_get(
        self, namespace: str, service: str, port: int, path: str, params: dict[str, str]
    ) -> str:
        """GET ``path`` on a Service through the API server's proxy (no port-forward needed)."""
        from kubernetes.client.exceptions import ApiException

        api = self.api_client()
        url = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
        try:
            data = self._call(
                lambda: api.call_api(
                    url,
                    "GET",
                    query_params=list(params.items()),
                    response_type="str",
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        except ApiException as exc:
            raise self._api_error(exc, f"service {namespace}/{service}") from exc
        text: str = data[0].data.decode("utf-8", "replace")
        return text
