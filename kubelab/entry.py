"""The ``kubelab`` console script and ``python -m kubelab``.

Only this small module is imported before the handler is in place. A Ctrl-C while the CLI's
own modules are still loading (the first tenth of a second) then ends with exit code 130
and one line, not a KeyboardInterrupt traceback. From then on ``kubelab.cli.main.run``
handles it, as every other error.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from kubelab.cli.main import run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    run()
