"""The durable outbox: queued forwards delivered to their destinations, at least once.

Its modules are imported by path; the package re-exports nothing: `queue` (the delivery loop),
`forward` (a queued forward and DeliveryError), `paho_link` (paho-mqtt on the event loop) and
`sinks` (one module per destination kind).
"""

__all__: list[str] = []
