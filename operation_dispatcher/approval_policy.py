"""ApprovalPolicy: who answers each kind of request (start, cancel, pause, resume).

``serve`` has no Python callback to ask, so its config names a policy per kind instead
(``[approvals]`` in the TOML file); the same object is the ``approval_policy`` argument of
:class:`~.dispatcher.OperationDispatcher`. Per kind:

* ``"auto"``: no person is needed. The request callback decides if there is one, else the
  request is approved at once (so a policy of all ``"auto"`` changes nothing).
* ``"operator"``: the request stays PENDING, without asking the callback, until someone answers
  it with ``decide()`` (``POST /requests/<id>/approve|deny``). It waits ``operator_timeout_seconds``
  at most, or, when that is None (the default), for as long as it takes: waiting is not a
  denial, and an operator's silence never pauses the dispatcher.
* ``"mqtt"``: as ``"operator"`` (PENDING until ``decide()``), meant for a central system on the
  plant's broker: the MQTT link (:mod:`.mqtt`) publishes the request on ``<prefix>/<resource>/
  requests`` and answers it from ``.../responses``. It publishes ``"operator"`` requests too,
  so any channel may answer either; ``waiting_for`` says which one the config meant.
* ``"deny"``: denied at once, without asking anyone.

``operator_when_payload`` narrows ``"operator"``: when it names payload keys, only an operation
whose payload holds one of them with a value other than ``false``/``null`` waits for the
operator; every other request of that kind is ``"auto"``. Fail safe: ``"yes"`` or ``1`` count as
set (a doubtful flag asks the person).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from . import _checks
from .approvals import RequestKind
from .errors import ValidationError
from .models import Operation


class Policy(StrEnum):
    """What happens to one kind of request."""

    AUTO = "auto"
    OPERATOR = "operator"
    MQTT = "mqtt"
    DENY = "deny"

    @property
    def waits(self) -> bool:
        """Whether a request of this policy stays PENDING until someone calls ``decide()``."""
        return self in _WAITING

    @property
    def denies(self) -> bool:
        """Whether a request of this policy is denied at once, without asking anyone."""
        return self is Policy.DENY


_WAITING = frozenset({Policy.OPERATOR, Policy.MQTT})

#: The keys of ``[approvals]`` besides the four kinds.
TIMEOUT_KEY = "operator_timeout_seconds"
PAYLOAD_KEY = "operator_when_payload"
KINDS = tuple(kind.value for kind in RequestKind)
KEYS = (*KINDS, TIMEOUT_KEY, PAYLOAD_KEY)
#: payload keys ``operator_when_payload`` may name (a list, not a flood)
MAX_PAYLOAD_KEYS = 32


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """One policy per request kind; see the module docstring. Checked when built."""

    start: Policy | str = Policy.AUTO
    cancel: Policy | str = Policy.AUTO
    pause: Policy | str = Policy.AUTO
    resume: Policy | str = Policy.AUTO
    operator_timeout_seconds: float | None = None
    operator_when_payload: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for kind in KINDS:
            value = getattr(self, kind)
            if not isinstance(value, Policy):
                value = Policy(_checks.one_of(value, kind, [p.value for p in Policy]))
            object.__setattr__(self, kind, value)
        _checks.seconds(self.operator_timeout_seconds, TIMEOUT_KEY, optional=True)
        object.__setattr__(
            self, PAYLOAD_KEY, _payload_keys(self.operator_when_payload, PAYLOAD_KEY)
        )

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], section: str = "approvals") -> ApprovalPolicy:
        """Build from a TOML table; raises ValidationError for its first problem (see
        :func:`policy_problems` for all of them)."""
        problems = policy_problems(table, section)
        if problems:
            key, rule = problems[0]
            raise ValidationError(key, rule)
        return cls(**{key: table[key] for key in KEYS if key in table})

    def for_request(self, kind: RequestKind, operation: Operation) -> Policy:
        """The policy that applies to this request of ``operation``."""
        policy: Policy = getattr(self, kind.value)
        if policy.waits and self.operator_when_payload:
            payload = operation.payload
            # identity, not ==: 0 and 0.0 equal False but are doubtful, so they ask the person
            flagged = isinstance(payload, dict) and any(
                payload.get(key) is not None and payload.get(key) is not False
                for key in self.operator_when_payload
            )
            return policy if flagged else Policy.AUTO
        return policy

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {kind: getattr(self, kind).value for kind in KINDS}
        data[TIMEOUT_KEY] = self.operator_timeout_seconds
        data[PAYLOAD_KEY] = list(self.operator_when_payload)
        return data


def _payload_keys(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError(name, 'must be a list of payload keys, e.g. ["needs_operator"]')
    keys = tuple(value)
    if len(keys) > MAX_PAYLOAD_KEYS:
        raise ValidationError(name, f"names at most {MAX_PAYLOAD_KEYS} payload keys")
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValidationError(name, "each payload key must be a non-empty string")
        _checks.text(key, name)
    return keys


def policy_problems(table: Any, section: str = "approvals") -> list[tuple[str, str]]:
    """Every problem of an ``[approvals]`` table, as (key, rule) pairs; empty when usable."""
    if not isinstance(table, Mapping):
        return [(section, "must be a table ([approvals])")]
    problems: list[tuple[str, str]] = []
    for key, value in table.items():
        where = f"{section}.{key}"
        if key not in KEYS:
            problems.append((where, f"unknown key (known: {', '.join(KEYS)})"))
            continue
        try:
            if key in KINDS:
                _checks.one_of(value, key, [p.value for p in Policy], got=False)
            elif key == TIMEOUT_KEY:
                # TOML has no null: leave the key out to wait for as long as it takes
                _checks.seconds(value, key, got=False)
            else:
                _payload_keys(value, key)
        except ValidationError as exc:
            problems.append((where, exc.reason))
    return problems


__all__ = ["ApprovalPolicy", "KEYS", "KINDS", "Policy", "policy_problems"]
