"""Bridges between real hardware (serial lines, Modbus PLCs) and an OperationDispatcher.

Each bridge runs one device connection on its own named thread (see :mod:`.base`); the modules
that need pymodbus or pyserial are imported only when you import them (or build a bridge of
that type from a config), so the package itself costs nothing without those extras.

The bridges are plug-ins of the core: setup.cfg declares ``modbus`` and ``serial`` in the
entry-point group ``operation_dispatcher.bridges`` (the ``type`` of a ``[[bridges]]`` table) and
the demo's simulated PLC in ``operation_dispatcher.demo_devices``. This package imports the
core; the core never imports it by name.
"""
