"""Prometheus metrics of one server, in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "offline_requests",
            "Requests by route, status and model version",
            ["route", "status", "model"],
            registry=r,
        )
        self.latency = Histogram(
            "offline_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "offline_batch_size",
            "Rows per forward pass of /predict",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "offline_queue_depth", "Requests waiting for a /predict batch", ["model"], registry=r
        )
        self.tokens = Counter(
            "offline_tokens",
            "Tokens by model version and type (prompt, completion)",
            ["model", "type"],
            registry=r,
        )
        self.decode_batch = Histogram(
            "offline_decode_batch_size",
            "Sequences decoded together in one step of continuous batching",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.sequences = Gauge(
            "offline_sequences",
            "Generations by state (running: in the KV cache; waiting: queued for a slot)",
            ["model", "state"],
            registry=r,
        )
        self.kv_slots = Gauge(
            "offline_kv_cache_slots", "Sequences the KV cache holds at once", ["model"], registry=r
        )
        self.prefill_tokens = Counter(
            "offline_prefill_tokens", "Prompt tokens read into the KV cache", ["model"], registry=r
        )
        self.queue_seconds = Histogram(
            "offline_generation_queue_seconds",
            "Time a generation waited for a slot of the KV cache",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
