"""``python -m kubelab`` runs the CLI (same as the ``kubelab`` console script)."""

from kubelab.entry import main

main()
