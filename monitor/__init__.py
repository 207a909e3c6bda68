"""keywatch's data side: config, relay adapters, store, metrics, scheduler and the HTTP server."""

__version__ = "0.1.0"
