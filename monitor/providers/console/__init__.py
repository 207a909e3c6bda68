"""One-api and new-api: relays with an admin console API."""
