"""Mongo repositories, the SMTP sender, the dead-letter publisher, in-memory fakes."""
