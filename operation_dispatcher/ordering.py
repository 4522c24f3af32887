"""The dispatch order: sort rules and the heap key they make.

Default order as in the original: release_date ascending (none last), priority descending,
created_at ascending. Kept apart from the queue so the order can be read (and tested) alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from .errors import ValidationError
from .models import Operation

_INF = float("inf")
_NEG_INF = float("-inf")


class SortField(StrEnum):
    """Operation fields the queue can sort by."""

    PRIORITY = "priority"
    RELEASE_DATE = "release_date"
    CREATED_AT = "created_at"


class SortDirection(StrEnum):
    """Ascending or descending order for one sort rule."""

    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True, slots=True)
class SortRule:
    """One level of the dispatch order. ``none_last`` puts missing values last in either direction."""

    field: SortField
    direction: SortDirection = SortDirection.ASC
    none_last: bool = True

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "field", SortField(self.field))
        except ValueError:
            raise ValidationError(
                "sort_rules.field", f"must be one of {', '.join(SortField)}; got {self.field!r}"
            ) from None
        try:
            object.__setattr__(self, "direction", SortDirection(self.direction))
        except ValueError:
            raise ValidationError(
                "sort_rules.direction", f"must be asc or desc; got {self.direction!r}"
            ) from None


#: The original's default: release_date ascending (none last), then priority descending;
#: created_at ascending is appended to every rule set that lacks it, as a FIFO tie-break.
DEFAULT_SORT_RULES: tuple[SortRule, ...] = (
    SortRule(SortField.RELEASE_DATE, SortDirection.ASC, True),
    SortRule(SortField.PRIORITY, SortDirection.DESC, True),
)


def normalize_sort_rules(sort_rules: Iterable[SortRule] | None) -> tuple[SortRule, ...]:
    """Apply the defaults and append the created_at tie-break when no rule uses it."""
    rules = DEFAULT_SORT_RULES if sort_rules is None else tuple(sort_rules)
    if not rules:
        raise ValidationError("sort_rules", "must contain at least one rule")
    for rule in rules:
        if not isinstance(rule, SortRule):
            raise ValidationError("sort_rules", f"items must be SortRule, got {type(rule).__name__}")
    if all(rule.field is not SortField.CREATED_AT for rule in rules):
        rules = (*rules, SortRule(SortField.CREATED_AT, SortDirection.ASC, True))
    return rules


def make_sort_key(rules: tuple[SortRule, ...]) -> Callable[[Operation], tuple[Any, ...]]:
    """Build the function that turns an operation into its heap key (one number per rule)."""
    # Generated as straight-line code (one expression per rule, as the operation copier is):
    # the key is computed on every add, and a loop building a list cost twice as much. The
    # text holds only SortField values (checked) and rule indexes.
    namespace: dict[str, Any] = {"_datetime": datetime}
    parts = []
    for index, rule in enumerate(rules):
        name = SortField(rule.field).value
        namespace[f"_sign{index}"] = -1 if rule.direction is SortDirection.DESC else 1
        namespace[f"_missing{index}"] = _INF if rule.none_last else _NEG_INF
        parts.append(
            f"(_missing{index} if (v := op.{name}) is None else _sign{index} * "
            f"(v.timestamp() if isinstance(v, _datetime) else v))"
        )
    text = f"def key(op):\n    return ({', '.join(parts)},)\n"
    exec(text, namespace)  # noqa: S102 - fixed text built from SortField values
    key: Callable[[Operation], tuple[Any, ...]] = namespace["key"]
    return key


__all__ = [
    "DEFAULT_SORT_RULES",
    "SortDirection",
    "SortField",
    "SortRule",
    "make_sort_key",
    "normalize_sort_rules",
]
