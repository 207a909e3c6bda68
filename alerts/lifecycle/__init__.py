"""Lifecycle: alert states, the records they keep, and the tables they live in."""
