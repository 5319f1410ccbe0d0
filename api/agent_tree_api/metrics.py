"""The API's Prometheus metrics (served on their own port, ``AGENT_TREE_API_METRICS_PORT``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    """Requests by route and status code, open streams, and how late events reach their listeners."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "agent_tree_api_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "agent_tree_api_request_duration_seconds",
            "Time to the response's headers (streams: until they start).",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "agent_tree_api_open_streams", "Server-Sent Event streams open now.", registry=self.registry
        )
        self.feeds = Gauge(
            "agent_tree_api_feeds",
            "Runs followed now (one reader each, shared by their streams).",
            registry=self.registry,
        )
        self.delivery_lag = Histogram(
            "agent_tree_api_event_delivery_lag_seconds",
            "From a step's commit in PostgreSQL to its write on an SSE stream (live steps only).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.dropped = Counter(
            "agent_tree_api_stream_drops",
            "Streams ended because their client fell QUEUE_MAX events behind (it resumes from Last-Event-ID).",
            registry=self.registry,
        )
