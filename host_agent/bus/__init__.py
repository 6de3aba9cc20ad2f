"""The broker and the agent's connection to it: device messages in, acknowledged after commit; commands out.

Its modules are imported by path; the package re-exports nothing: `connection` (the agent's
connection), `ackclient` (fp.mqtt's client with manual acknowledgements), `broker` (the embedded
mosquitto), `mosquitto` (a mosquitto on a free loopback port) and `tcp` (shared socket options).
"""

__all__: list[str] = []
