"""``[[bridges]]`` tables -> bridges: moved to :mod:`operation_dispatcher.bridges`.

Bridge kinds are plug-ins now (the entry-point group ``operation_dispatcher.bridges``, where this
package declares ``modbus`` and ``serial``), so the table checks live beside the config loader
that runs them. This module stays so that ``from firmware_bridges.config import build_bridges``
keeps working; new code imports from :mod:`operation_dispatcher.bridges`.
"""

from __future__ import annotations

from operation_dispatcher.bridges import bridge_errors, build_bridges

__all__ = ["bridge_errors", "build_bridges"]
