"""Kubernetes object semantics, pure: label selectors, jsonpath, patches.

The bottom of kubelab's layers: the cluster code, the sandbox and the checks build on it,
and it imports none of them.
"""
