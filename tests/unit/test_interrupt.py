"""Ctrl-C at any moment of a command's start, kubelab's imports included: exit 130 and no
traceback. Only what runs before kubelab's first line is out of its reach: the interpreter's
own start-up and the console script's two imports (``re``, then ``kubelab.entry``); a
Ctrl-C there is reported by Python itself, with frames of no kubelab module."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import ROOT

import kubelab

PACKAGE = Path(kubelab.__file__).resolve().parent
# Frames of modules that run before the handler of kubelab/entry.py is in place.
BEFORE_HANDLER = {PACKAGE / "__init__.py", PACKAGE / "entry.py"}


def _kubelab_frames(err: str) -> set[Path]:
    files = {Path(f) for f in re.findall(r'File "([^"]+)"', err)}
    return {f for f in files if f.is_relative_to(PACKAGE)}


def test_ctrl_c_while_starting_never_prints_a_traceback(tmp_path):
    codes = []
    for step in range(24):
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "kubelab"), "lessons"],  # the console script
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "KUBELAB_HOME": str(tmp_path), "HOME": str(tmp_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(step * 0.015)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        codes.append(proc.returncode)
        if "Traceback" in err:
            assert _kubelab_frames(err) <= BEFORE_HANDLER, (step, err)
            continue
        assert "Traceback" not in out, (step, out)
        # Killed by the signal before Python's own handler was in place, interrupted
        # (130), or already done (0).
        assert proc.returncode in (-signal.SIGINT, 130, 0), (step, proc.returncode, err)
        if proc.returncode == 130 and err.strip():  # typer's own handler says nothing
            assert err.strip().splitlines()[-1].startswith("interrupted"), err
    assert codes.count(130) >= 5, codes  # most of them landed in kubelab's own start-up
