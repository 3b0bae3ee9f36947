"""The small library every TMSP service shares.

Settings, structured logging, metrics, the gRPC server bootstrap, the Kafka topic registry,
producer and consumer runner, and MongoDB helpers. Services import from here; nothing in
here imports a service.
"""
