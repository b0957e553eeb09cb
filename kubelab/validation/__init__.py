"""Validation of rendered Kubernetes objects before anything touches a cluster."""
