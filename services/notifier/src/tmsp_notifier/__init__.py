"""TMSP notifier service."""
