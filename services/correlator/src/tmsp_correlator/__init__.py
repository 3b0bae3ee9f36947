"""TMSP correlator service."""
