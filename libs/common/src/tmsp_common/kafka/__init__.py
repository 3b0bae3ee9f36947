"""Kafka plumbing: the topic registry, the event envelope, a producer and a consumer runner."""
