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
    llm: LLMMetrics


@dataclass(frozen=True, slots=True, eq=False)
class LLMMetrics:
    """The served LLM's: latency to the first token, decode speed, reuse and sparsity."""

    ttft: Histogram
    tokens_per_s: Histogram
    prompt_tokens: Counter
    reused_tokens: Counter
    completion_tokens: Counter
    attended: Histogram
    queue_depth: Gauge
    generations: Counter


def _llm_metrics(registry: CollectorRegistry, p: str) -> LLMMetrics:
    return LLMMetrics(
        ttft=Histogram(
            f"{p}_llm_time_to_first_token_seconds",
            "From the start of a generation to its first token (prefill, after any reuse)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        tokens_per_s=Histogram(
            f"{p}_llm_tokens_per_second",
            "Decode speed of a generation after its first token",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=registry,
        ),
        prompt_tokens=Counter(f"{p}_llm_prompt_tokens", "Prompt tokens", registry=registry),
        reused_tokens=Counter(
            f"{p}_llm_reused_tokens",
            "Prompt tokens taken from a stored context instead of computed",
            registry=registry,
        ),
        completion_tokens=Counter(
            f"{p}_llm_completion_tokens", "Tokens generated", registry=registry
        ),
        attended=Histogram(
            f"{p}_llm_keys_attended_fraction",
            "Share of the cached keys a decode step attended (window + DIPR), per generation",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
            registry=registry,
        ),
        queue_depth=Gauge(
            f"{p}_llm_queue_depth", "Generations waiting for the model", registry=registry
        ),
        generations=Counter(
            f"{p}_llm_generations",
            "Generations by how they ended (stop, length, cancelled, error)",
            ["finish_reason"],
            registry=registry,
        ),
    )


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
        llm=_llm_metrics(registry, p),
    )


__all__ = ["LLMMetrics", "Metrics", "make_metrics"]
