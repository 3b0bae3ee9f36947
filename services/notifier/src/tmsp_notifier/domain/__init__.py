"""Pure notification rules: kinds, settings, validation, throttling, ids. No I/O."""
