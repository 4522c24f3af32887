"""Bridges between real hardware (serial lines, Modbus PLCs) and an OperationDispatcher.

Each bridge runs one device connection on its own named thread (see :mod:`.base`); the modules
that need pymodbus or pyserial are imported only when you import them (or build a bridge of
that type from a config), so the package itself costs nothing without those extras.
"""
