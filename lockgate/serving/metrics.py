"""The gateway's Prometheus metrics, in a registry of their own (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    """Requests, latency, tokens, refusals, rollbacks and feedback, labelled by variant and model.

    Each gateway has its own registry, so two gateways in one process (tests, benchmarks) do not
    clash over metric names.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lockgate_gateway_requests",
            "Chat requests by variant and outcome",
            ["variant", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lockgate_gateway_latency_seconds",
            "End-to-end latency of answered requests",
            ["variant", "model"],
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.tokens = Counter(
            "lockgate_gateway_tokens", "Tokens served", ["variant", "model", "kind"], registry=self.registry
        )
        self.in_flight = Gauge("lockgate_gateway_in_flight", "Requests being answered now", registry=self.registry)
        self.rejected = Counter(
            "lockgate_gateway_rejected", "Requests refused before routing", ["reason"], registry=self.registry
        )
        self.rollbacks = Counter(
            "lockgate_gateway_canary_rollbacks", "Automatic canary rollbacks", registry=self.registry
        )
        self.feedback = Counter("lockgate_gateway_feedback", "Feedback by rating", ["rating"], registry=self.registry)
