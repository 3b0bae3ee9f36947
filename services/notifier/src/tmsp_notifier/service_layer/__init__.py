"""Use cases: deliver a notification, derive notifications from domain events, settings."""
