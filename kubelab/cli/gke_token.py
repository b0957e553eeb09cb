"""``kubelab gke-token`` (hidden): an ExecCredential for kubectl, from google-auth.

The kubeconfig kubelab writes for a GKE cluster runs ``python -m kubelab gke-token`` as its
``exec`` credential plugin (apiVersion ``client.authentication.k8s.io/v1``, interactiveMode
``Never``). This prints ``{"kind": "ExecCredential", "status": {"token": ...,
"expirationTimestamp": ...}}`` on stdout with a fresh OAuth access token of the Application
Default Credentials; kubectl and the Kubernetes client call it again when the token expires,
so no gcloud plugin is needed. The token goes to stdout only, for kubectl; it is never
logged.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

EXEC_API_VERSION = "client.authentication.k8s.io/v1"
# Used when google-auth reports no expiry: Google access tokens live one hour.
DEFAULT_LIFETIME = timedelta(minutes=55)


def exec_credential(credentials: Credentials) -> dict[str, Any]:
    """Refresh ``credentials`` and return the ExecCredential document kubectl expects."""
    from google.auth.exceptions import GoogleAuthError
    from google.auth.transport.requests import Request

    from kubelab.errors import SetupError

    try:
        cast(Any, credentials).refresh(Request())  # untyped in google-auth
    except GoogleAuthError as exc:
        raise SetupError(
            f"could not get a Google access token: {type(exc).__name__}",
            hint="Run `gcloud auth application-default login` again.",
        ) from None
    token = credentials.token
    if not token:
        raise SetupError("google-auth returned no access token")
    expiry = credentials.expiry  # naive UTC in google-auth
    expires = (
        expiry.replace(tzinfo=UTC) if expiry is not None else datetime.now(UTC) + DEFAULT_LIFETIME
    )
    return {
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "status": {
            "token": token,
            "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


def gke_token() -> None:
    """Print an ExecCredential with a Google access token (used by GKE kubeconfigs)."""
    from kubelab.providers.gke import default_credentials

    credentials, _ = default_credentials()
    sys.stdout.write(json.dumps(exec_credential(credentials)) + "\n")
    sys.stdout.flush()
