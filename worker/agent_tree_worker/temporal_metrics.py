"""The Temporal SDK's own metrics, bridged into the worker's Prometheus registry (one port, one scrape).

The SDK's core records its metrics (poll latencies, task slots, workflow/activity latencies ...) and
the ones workflows record through ``workflow.metric_meter()`` into a :class:`MetricBuffer`;
:class:`TemporalMetricsBridge` drains it (every second, and at each scrape) and exposes the result as
a Prometheus collector on the worker's ``/metrics``.

Why a bridge and not the SDK's own Prometheus exporter (``PrometheusConfig(bind_address=...)``): that
exporter needs a second port per worker (a second containerPort, a second scrape endpoint, another
NetworkPolicy hole, and on a host where pods share the network, one more port to collide on). The
bridge keeps one endpoint and the SDK's metric names and labels.

Names follow Prometheus conventions: counters get ``_total``, duration histograms (unit ``s``) get
``_seconds``; the constant ``service_name`` label is dropped. Metrics a workflow records under an
``agent_tree_`` name keep only the labels the workflow set (the SDK adds namespace, task queue and
workflow type, which a worker has one of anyway).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

log = logging.getLogger(__name__)

BUFFER_SIZE = 200_000
DRAIN_EVERY = 1.0
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DROPPED = frozenset({"service_name"})
SDK_DEFAULTS = frozenset({"service_name", "namespace", "task_queue", "workflow_type"})
OWN_PREFIX = "agent_tree_"

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.count += 1


@dataclass
class _Family:
    name: str
    kind: int
    help: str
    samples: dict[Labels, Any] = field(default_factory=dict)


def prometheus_name(name: str, kind: int, unit: str | None) -> str:
    """The exposed name of an SDK metric: ``_total`` on counters, ``_seconds`` on durations."""
    if kind == BUFFERED_METRIC_KIND_COUNTER:
        return name if name.endswith("_total") else f"{name}_total"
    if unit == "s" and not name.endswith("_seconds"):
        return f"{name}_seconds"
    return name


def label_set(name: str, attributes: Mapping[str, Any]) -> Labels:
    drop = SDK_DEFAULTS if name.startswith(OWN_PREFIX) else DROPPED
    return tuple(
        sorted((k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in attributes.items() if k not in drop)
    )


class TemporalMetricsBridge(Collector):
    """A Prometheus collector fed from a Temporal :class:`MetricBuffer` (thread-safe)."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer
        self.families: dict[str, _Family] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def drain(self) -> None:
        """Fold every buffered update into the running totals."""
        with self.lock:
            try:
                updates = self.buffer.retrieve_updates()
            except RuntimeError:  # the runtime is not created yet
                return
            for update in updates:
                metric = update.metric
                name = prometheus_name(metric.name, metric.kind, metric.unit)
                family = self.families.get(name)
                if family is None:
                    family = self.families[name] = _Family(name, metric.kind, metric.description or metric.name)
                labels = label_set(metric.name, update.attributes)
                if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
                    family.samples[labels] = family.samples.get(labels, 0) + update.value
                elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
                    family.samples[labels] = update.value
                else:
                    family.samples.setdefault(labels, _Histogram()).observe(float(update.value))

    def collect(self) -> Iterator[Any]:
        self.drain()
        with self.lock:
            families = [(f.name, f.kind, f.help, dict(f.samples)) for f in self.families.values()]
        for name, kind, help_, samples in families:
            names = sorted({k for labels in samples for k, _ in labels})
            if kind == BUFFERED_METRIC_KIND_COUNTER:
                out: Any = CounterMetricFamily(name.removesuffix("_total"), help_, labels=names)
            elif kind == BUFFERED_METRIC_KIND_GAUGE:
                out = GaugeMetricFamily(name, help_, labels=names)
            else:
                out = HistogramMetricFamily(name, help_, labels=names)
            for labels, value in samples.items():
                values = [dict(labels).get(k, "") for k in names]
                if isinstance(value, _Histogram):
                    cumulative, buckets = 0, []
                    for bound, count in zip([*BUCKETS, float("inf")], value.counts, strict=True):
                        cumulative += count
                        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                    out.add_metric(values, buckets, value.total)
                else:
                    out.add_metric(values, value)
            yield out

    def start(self) -> None:
        """Drain in a background thread, so the buffer never fills up between scrapes."""

        def loop() -> None:
            while not self._stop.wait(DRAIN_EVERY):
                try:
                    self.drain()
                except Exception as exc:  # never let metrics take a worker down
                    log.warning("draining Temporal metrics failed: %s", exc)

        self._thread = threading.Thread(target=loop, name="temporal-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def runtime_with_metrics() -> tuple[Runtime, TemporalMetricsBridge]:
    """A Temporal :class:`Runtime` whose metrics go to a bridge (register it on a Prometheus registry)."""
    buffer = MetricBuffer(BUFFER_SIZE, duration_format=MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    return runtime, TemporalMetricsBridge(buffer)
