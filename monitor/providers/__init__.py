"""Relay adapters, one module per relay kind, behind the `Provider` protocol (`base`); the
registry (`registry.build_provider`) picks one by kind. Importing this package loads nothing:
the pure layers never pay for httpx or the adapters."""
