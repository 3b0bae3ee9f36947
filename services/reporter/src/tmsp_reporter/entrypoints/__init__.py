"""TMSP reporter."""
