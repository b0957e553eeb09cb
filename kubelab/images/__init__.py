"""Build and push a lesson's images, and prepare the Gitea that hosts their source and tags.

This layer sits beside ``kubelab.cluster``: it never talks to the Kubernetes API itself.

* :mod:`kubelab.images.gitea` configures Gitea through its HTTP API (an access token for the
  admin, the course organization, the repository holding the app source, the source itself)
  and asks Gitea's container registry whether a tag already exists.
* :mod:`kubelab.images.build` turns a lesson's ``images:`` into a plan (build or skip, and
  why) and runs the ``docker`` strategy: ``docker build``, ``docker login
  --password-stdin``, ``docker push``.
* :mod:`kubelab.images.kaniko` renders the ``kaniko`` strategy as plain Kubernetes objects
  (a docker-config Secret and one Job per image) that the cluster layer applies and waits
  for; it also renders the image pull Secret the lesson's pods use.

Secrets (the admin password, tokens) are never logged and never part of an error message.
Import the submodules directly: only :mod:`kubelab.images.gitea` imports ``requests``, so
nothing heavy is loaded when a command does not touch images.
"""
