"""``python -m kubelab`` runs the CLI (same as the ``kubelab`` console script)."""

from kubelab.cli.main import run

run()
