"""Helm components a lesson can ask for (Istio, Kiali, Jaeger, ...) and their order."""
