"""Checks: read-only assertions about a cluster that grade an exercise.

``kubelab.checks.types`` declares every check type with its parameters (validated when a
lesson is loaded); the registry maps the ``type:`` of a lesson file to its class.
"""
