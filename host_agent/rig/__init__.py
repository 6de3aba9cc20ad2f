"""Test and demo rig: mosquitto on a free port, the simulated device, the virtual board, the live demo."""
