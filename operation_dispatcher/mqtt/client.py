"""The paho client both ends use: MQTT 3.1.1, callback API version 2, TLS and login applied.

paho runs its own network thread (``loop_start``) and reconnects by itself, waiting
:data:`RECONNECT_MIN_SECONDS` and doubling up to :data:`RECONNECT_MAX_SECONDS` between tries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import MqttSettings

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

RECONNECT_MIN_SECONDS = 1
RECONNECT_MAX_SECONDS = 30


def require_paho() -> Any:
    """paho's client module, or ImportError naming the extra to install."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise ImportError(
            "the MQTT link needs paho-mqtt 2.x: pip install 'operation-dispatcher[mqtt]'"
        ) from exc
    return mqtt


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    clean_session: bool = True,
    will: tuple[str, bytes] | None = None,
) -> mqtt.Client:
    """A configured, not yet connected client; ``will``: (topic, payload), retained, QoS 1."""
    paho = require_paho()
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
        protocol=paho.MQTTv311,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls_ca is not None:
        client.tls_set(ca_certs=settings.tls_ca, certfile=settings.tls_cert,
                       keyfile=settings.tls_key)
    client.reconnect_delay_set(RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    return client


__all__ = ["RECONNECT_MAX_SECONDS", "RECONNECT_MIN_SECONDS", "make_client", "require_paho"]
