"""kubelab: a lesson runner for hands-on Kubernetes courses.

The package is layered (see README): ``cli`` wires commands and is the only place that
prints errors and exits; ``lessons`` loads and plans lessons; ``checks`` declares and
runs checks; ``validation`` validates rendered manifests; ``state`` records what
kubelab created. Lower layers never import ``cli``.
"""

__version__ = "0.1.0"
