"""Simulated devices (a serial firmware, a Modbus PLC) for tests, demos and benchmarks."""
