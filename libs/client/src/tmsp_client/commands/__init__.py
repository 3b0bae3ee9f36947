"""The command groups; each module's ``register`` adds its commands to the parser."""
