"""Notification: muting, grouping, rendering and the durable outbox to Apprise."""
