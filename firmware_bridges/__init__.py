"""Bridges between real hardware (serial lines, Modbus PLCs) and an OperationDispatcher.

Empty for now: the serial and Modbus bridges arrive with their own issue. The package exists so
that its name is reserved and importable from the start.
"""
