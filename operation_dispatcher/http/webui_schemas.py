"""The request and response models of the routes the dashboard reads besides the core ones:
``GET /auth/whoami`` and ``GET /reports/kpis``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .schemas import REQUEST_MODELS, ErrorRule, RequestModel, ResponseModel, Timestamp

_TIME_TEXT = (
    "{field} must be a valid ISO-8601 datetime with a timezone, e.g. 2026-01-31T08:00:00Z "
    "(got {input!r})"
)


class WhoAmI(ResponseModel):
    """Who the request's token is, and what it may do."""

    name: str | None = Field(description="the token's name in `[http.tokens]` (null for the "
                                         "single `token`, or when the app has none)")
    scopes: list[str] = Field(description="the scopes the token holds: read, submit, operate, "
                                          "admin (all of them when the app has no token)")
    token_required: bool = Field(description="whether this server asks for a token at all")


class KpiQuery(RequestModel):
    from_time: Timestamp | None = Field(None, description="window start, ISO 8601 with offset "
                                                          "(default: to_time minus one hour)")
    to_time: Timestamp | None = Field(None, description="window end, ISO 8601 with offset "
                                                        "(default: now)")
    error_rules: ClassVar[dict[tuple[str, str], ErrorRule]] = {
        ("from_time", "*"): ErrorRule("invalid_from_time", _TIME_TEXT),
        ("to_time", "*"): ErrorRule("invalid_to_time", _TIME_TEXT),
    }


class KpiReport(ResponseModel):
    """The HistoryAnalyzer figures of one window (null where the events do not tell)."""

    from_time: str
    to_time: str
    events: int = Field(description="events of the window analysed")
    truncated: bool = Field(description="true when the window held more events than are "
                                        "analysed (the most recent ones are kept)")
    dispatcher_uptime_seconds: float | None
    dispatcher_uptime_percentage: float | None
    dispatcher_runtime_seconds: float | None
    dispatcher_runtime_percentage: float | None
    operation_count: int
    completed_operation_count: int
    successful_operation_count: int


# A validation error names its model by title; this is how the envelope finds the rules above.
REQUEST_MODELS[KpiQuery.__name__] = KpiQuery

__all__ = ["KpiQuery", "KpiReport", "WhoAmI"]
