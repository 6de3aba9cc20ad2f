"""The durable outbox: queued forwards delivered to their destinations, at least once."""
