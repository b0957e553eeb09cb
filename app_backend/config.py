"""Settings of the demo application, read from the environment.

The container image and the Helm chart configure app-backend only through environment
variables, so this is the single place that knows their names, defaults and valid values.
Parsing is strict: a typo such as ``APP_VERSION=V2`` must stop the pod with a readable
message (and exit code 2, see :func:`app_backend.server.main`) instead of silently running
the wrong version in a lesson about rollouts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from app_backend import SUPPORTED_VERSIONS

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080
DEFAULT_VERSION = "v1"
DEFAULT_BUG_AFTER = 30
# A pool this large would never run dry within a lesson; the bound mostly catches typos.
MAX_BUG_AFTER = 1_000_000

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_LOG_LEVELS: Mapping[str, int] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


class ConfigError(ValueError):
    """An environment variable has a value the application cannot run with."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything :func:`app_backend.server.serve` needs to start."""

    version: str = DEFAULT_VERSION
    bug_after: int = DEFAULT_BUG_AFTER
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: int = logging.INFO
    access_log: bool = True

    @property
    def access_log_enabled(self) -> bool:
        """Access lines are info-level: ``LOG_LEVEL=WARNING`` silences them too."""
        return self.access_log and self.log_level <= logging.INFO


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    # Helm renders an unset value as an empty string; treat it like "not set".
    return value or None


def parse_version(value: str) -> str:
    """Validate an ``APP_VERSION`` value (exact match, ``V1`` is rejected)."""
    if value not in SUPPORTED_VERSIONS:
        expected = " or ".join(SUPPORTED_VERSIONS)
        raise ConfigError(f"invalid APP_VERSION {value!r}: expected {expected}")
    return value


def parse_int(name: str, value: str, *, minimum: int, maximum: int) -> int:
    """Parse a plain decimal integer within ``[minimum, maximum]``."""
    # int() would also take "+5", "1_000" and non-ASCII digits; a setting should be plain.
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(
            f"invalid {name} {value!r}: expected an integer from {minimum} to {maximum}"
        )
    number = int(value)
    if not minimum <= number <= maximum:
        raise ConfigError(
            f"invalid {name} {value!r}: expected an integer from {minimum} to {maximum}"
        )
    return number


def parse_bool(name: str, value: str) -> bool:
    """Parse ``1/0``, ``true/false``, ``yes/no`` or ``on/off`` (any case)."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"invalid {name} {value!r}: expected 1/0, true/false, yes/no or on/off")


def parse_log_level(value: str) -> int:
    """Parse a ``LOG_LEVEL`` name such as ``info`` or ``WARNING``."""
    try:
        return _LOG_LEVELS[value.upper()]
    except KeyError:
        names = ", ".join(_LOG_LEVELS)
        raise ConfigError(f"invalid LOG_LEVEL {value!r}: expected one of {names}") from None


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from an environment mapping (usually ``os.environ``).

    Raises :class:`ConfigError` on the first invalid value.
    """
    version = _get(env, "APP_VERSION")
    bug_after = _get(env, "BUG_AFTER")
    host = _get(env, "HOST")
    port = _get(env, "PORT")
    log_level = _get(env, "LOG_LEVEL")
    access_log = _get(env, "ACCESS_LOG")
    return Settings(
        version=DEFAULT_VERSION if version is None else parse_version(version),
        bug_after=(
            DEFAULT_BUG_AFTER
            if bug_after is None
            else parse_int("BUG_AFTER", bug_after, minimum=1, maximum=MAX_BUG_AFTER)
        ),
        host=DEFAULT_HOST if host is None else host,
        port=DEFAULT_PORT if port is None else parse_int("PORT", port, minimum=1, maximum=65535),
        log_level=logging.INFO if log_level is None else parse_log_level(log_level),
        access_log=True if access_log is None else parse_bool("ACCESS_LOG", access_log),
    )
