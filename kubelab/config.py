"""The user's defaults for ``kubelab up``: ``$KUBELAB_HOME/config.yaml`` (or ``$KUBELAB_CONFIG``).

Flags win over the file; the file wins over kubelab's defaults. Example::

    provider: existing
    domain: lab.example.org
    tls: true
    email: teacher@example.org
    expose_dashboards: true   # Kiali at kiali.DOMAIN, token login (needs tls)
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import yaml

from kubelab import paths
from kubelab.base import problems
from kubelab.errors import UsageError


class UserConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    provider: str | None = None
    domain: str | None = None
    tls: bool = False
    email: str | None = None
    expose_dashboards: bool = False


def config_path() -> Path:
    override = os.environ.get("KUBELAB_CONFIG")
    return Path(override) if override else paths.home_dir() / "config.yaml"


def load_config() -> UserConfig:
    path = config_path()
    if not path.is_file():
        return UserConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[:3])
    else:
        found = problems(UserConfig, data)
        if not found:
            return msgspec.convert(data, UserConfig)
        detail = "; ".join(
            f"{'.'.join(map(str, loc))}: {message}" if loc else message for loc, message in found
        )
    raise UsageError(
        f"{path} is not a valid kubelab config: {detail}",
        hint="Allowed keys: provider, domain, tls, email, expose_dashboards.",
    )
