"""Not collected by the suite (no ``test_`` prefix): ``test_no_process_left.py`` runs it
in a pytest of its own to see what a session leaves behind. It starts the control plane,
writes where its PID file is, then fails on purpose, or waits to be killed."""

from __future__ import annotations

import os
import time
from pathlib import Path


def test_the_session_ends_badly(control_plane) -> None:  # type: ignore[no-untyped-def]
    Path(os.environ["PROBE_PIDS_AT"]).write_text(str(control_plane.plane.pid_file))
    assert control_plane.kube().version() == "v1.20.2"
    if os.environ.get("PROBE_MODE") == "hang":
        time.sleep(600)  # until the outer test kills this pytest
    raise AssertionError("failing on purpose: the fixture must still stop everything")
