"""Clients of the outside world: the Kubernetes API, Temporal, the Redis progress streams."""
