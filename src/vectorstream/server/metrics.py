"""Prometheus metrics, in a registry private to each app (two apps in one process never collide)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)


@dataclass(frozen=True, slots=True, eq=False)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    batch_inputs: Histogram
    batch_requests: Histogram
    batch_tokens: Histogram
    batch_seconds: Histogram
    tokens: Counter
    queue_depth: Gauge
    rejected: Counter
    cache_bytes: Gauge
    cache_hits: Counter
    cache_misses: Counter
    jobs: Gauge


def make_metrics() -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    p = "vectorstream"
    return Metrics(
        registry=registry,
        requests=Counter(
            f"{p}_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=registry,
        ),
        latency=Histogram(
            f"{p}_request_duration_seconds",
            "Time to answer a request",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        batch_inputs=Histogram(
            f"{p}_batch_inputs", "Inputs per model batch", buckets=_SIZE_BUCKETS, registry=registry
        ),
        batch_requests=Histogram(
            f"{p}_batch_requests",
            "Requests merged into one model batch",
            buckets=_SIZE_BUCKETS,
            registry=registry,
        ),
        batch_tokens=Histogram(
            f"{p}_batch_tokens", "Tokens per model batch", buckets=_TOKEN_BUCKETS, registry=registry
        ),
        batch_seconds=Histogram(
            f"{p}_batch_seconds",
            "Model time per batch",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        tokens=Counter(
            f"{p}_tokens", "Tokens run through the model (every route)", registry=registry
        ),
        queue_depth=Gauge(f"{p}_queue_depth", "Inputs waiting for the model", registry=registry),
        rejected=Counter(f"{p}_rejected", "Requests refused", ["reason"], registry=registry),
        cache_bytes=Gauge(
            f"{p}_highlight_cache_bytes", "Bytes held by the highlights cache", registry=registry
        ),
        cache_hits=Counter(
            f"{p}_highlight_cache_hits",
            "Documents found in the highlights cache",
            registry=registry,
        ),
        cache_misses=Counter(
            f"{p}_highlight_cache_misses", "Documents chunked and embedded", registry=registry
        ),
        jobs=Gauge(f"{p}_ingest_jobs", "Ingest jobs by state", ["state"], registry=registry),
    )


__all__ = ["Metrics", "make_metrics"]
