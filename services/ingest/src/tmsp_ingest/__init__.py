"""TMSP ingest service."""
