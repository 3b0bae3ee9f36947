"""TMSP auth service."""
