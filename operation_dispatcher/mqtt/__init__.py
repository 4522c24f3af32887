"""The MQTT link: a controller reports to the plant's broker, and takes commands from it.

A plant runs one dispatcher per cell; each speaks MQTT (paho-mqtt, extra ``mqtt``) to the broker
the plant already has. Topics are VDA-5050-like (``<prefix>/<resource_id>/<topic>``, with
``headerId`` and ``timestamp`` in every message; see :mod:`.topics` and README "MQTT").

* :class:`~.link.MqttLink` (paho): connection, state, events, approval requests and
  responses, commands and their results for one dispatcher.
* :class:`~.fleet.FleetView` (paho): every controller on a broker, for
  ``operation-dispatcher fleet``.
* :mod:`.settings`, :mod:`.topics`, :mod:`.outbox`, :mod:`.commands`: the parts that need no
  paho (config checks, message shapes, the event buffer, command handling).

Importing this package imports no paho: the classes that need it load on first use, so
``check-config`` works without the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import MqttSettings

if TYPE_CHECKING:
    from .fleet import FleetView
    from .link import MqttLink

_LAZY = {"MqttLink": ".link", "FleetView": ".fleet"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)


__all__ = ["FleetView", "MqttLink", "MqttSettings"]
