"""Test and demo rig: the simulated device, the virtual board, the live demo (mosquitto runs from host_agent.bus.mosquitto).

Its modules are imported by path; the package re-exports nothing: `simdevice`, `virtual_board`,
`postgres` and `demo`.
"""

__all__: list[str] = []
