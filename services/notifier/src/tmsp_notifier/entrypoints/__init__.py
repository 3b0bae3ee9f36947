"""Thin translation layers: Kafka consumers, the gRPC servicer, the process entry point."""
