"""Prometheus metrics: one endpoint per service, conventional names ``tmsp_<area>_...``."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

from tmsp_common.logging import get_logger

log = get_logger(__name__)

KAFKA_MESSAGES_CONSUMED = Counter(
    "tmsp_kafka_messages_consumed_total", "Messages handled by a consumer", ["topic", "group"]
)
KAFKA_MESSAGES_DEAD_LETTERED = Counter(
    "tmsp_kafka_messages_dead_lettered_total",
    "Messages sent to a dead-letter topic",
    ["topic", "reason"],
)
KAFKA_MESSAGES_PRODUCED = Counter(
    "tmsp_kafka_messages_produced_total", "Messages acknowledged by the broker", ["topic"]
)
KAFKA_HANDLER_SECONDS = Histogram(
    "tmsp_kafka_batch_handler_seconds", "Time to handle one consumed batch", ["group"]
)
GRPC_REQUESTS = Counter(
    "tmsp_grpc_server_handled_total", "gRPC calls completed", ["method", "code"]
)
GRPC_SECONDS = Histogram("tmsp_grpc_server_handling_seconds", "gRPC call duration", ["method"])


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve ``/metrics`` on ``port``; 0 means disabled."""
    if port:
        try:
            start_http_server(port, addr=addr)
        except OSError as exc:  # name the port: the error alone does not
            raise OSError(exc.errno, f"metrics endpoint {addr}:{port}: {exc.strerror}") from None
        log.info("metrics endpoint listening", port=port)
