"""Test and demo rig: the simulated device, the virtual board, the live demo (mosquitto runs from host_agent.bus.mosquitto)."""
