"""``gke_token()``: the ExecCredential kubectl reads, from injected google-auth credentials."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import google.auth
import pytest
from google.auth.credentials import Credentials

from kubelab.cli import gke_token as mod
from kubelab.errors import SetupError

FAKE_TOKEN = "ya29.FAKE-exec-token-abcdef"


class FakeCredentials(Credentials):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.refreshed = 0

    def refresh(self, request: Any) -> None:
        self.refreshed += 1
        self.token = FAKE_TOKEN
        self.expiry = dt.datetime(2030, 1, 2, 3, 4, 5)  # naive UTC, as google-auth sets it


def test_prints_exec_credential(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = FakeCredentials()
    seen: dict[str, Any] = {}

    def fake_default(scopes: list[str] | None = None, **_: Any) -> tuple[Credentials, str]:
        seen["scopes"] = scopes
        return creds, "proj"

    monkeypatch.setattr(google.auth, "default", fake_default)
    mod.gke_token()
    doc = json.loads(capsys.readouterr().out)
    assert doc == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": FAKE_TOKEN, "expirationTimestamp": "2030-01-02T03:04:05Z"},
    }
    assert creds.refreshed == 1
    assert seen["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"]


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.auth.exceptions import DefaultCredentialsError

    def fake_default(**_: Any) -> tuple[Credentials, str]:
        raise DefaultCredentialsError("nothing")

    monkeypatch.setattr(google.auth, "default", fake_default)
    with pytest.raises(SetupError) as err:
        mod.gke_token()
    assert err.value.hint and "application-default login" in err.value.hint


def test_refresh_failure_names_no_secret() -> None:
    from google.auth.exceptions import RefreshError

    class Broken(FakeCredentials):
        def refresh(self, request: Any) -> None:
            raise RefreshError(f"invalid_grant {FAKE_TOKEN}")

    with pytest.raises(SetupError) as err:
        mod.exec_credential(Broken())
    assert FAKE_TOKEN not in str(err.value) and err.value.__cause__ is None
