"""Builders of the Kubernetes objects the operator owns."""
