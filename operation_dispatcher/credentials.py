"""Bearer tokens and the scopes each grants, free of any web framework.

The REST API (:mod:`.http.auth`, Flask) and the MCP server's HTTP transport (:mod:`.mcp.http`,
ASGI) check the very same token table the same way, so a token means the same rights on both.

Checking a token compares the presented one with *every* known token, in constant time and over
SHA-256 digests (so neither the length nor which name matched leaks through timing). A match
also tells the token's name (``None`` for the one all-scopes ``token``), which the MCP server
records with an approval; the REST API tells it only to its holder (``GET /auth/whoami``).

Stdlib only: importing this loads neither Flask nor the MCP SDK.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import SCOPES, token_problems


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class TokenMatch:
    """Who presented a known token: its name (None for the all-scopes ``token``) and scopes."""

    name: str | None
    scopes: frozenset[str]


@dataclass(frozen=True)
class Credentials:
    """The tokens of one server: SHA-256 digests with the name and scopes of each."""

    entries: tuple[tuple[bytes, TokenMatch], ...]

    @classmethod
    def build(
        cls, token: str | None, tokens: Mapping[str, Mapping[str, Any]] | None
    ) -> Credentials | None:
        """The credentials for ``token`` (every scope) and the named ``tokens``; None when both
        are None (nothing is checked then).

        Raises ValueError naming every bad key.
        """
        if token is not None and not token:
            raise ValueError("token must be a non-empty string or None")
        if tokens is None:
            if token is None:
                return None
            return cls(((_digest(token), TokenMatch(None, frozenset(SCOPES))),))
        problems = token_problems(tokens, "tokens", token)
        if problems:
            raise ValueError("; ".join(f"{key}: {rule}" for key, rule in problems))
        entries = [
            (_digest(entry["token"]), TokenMatch(str(name), frozenset(entry["scopes"])))
            for name, entry in tokens.items()
        ]
        if token is not None:
            entries.insert(0, (_digest(token), TokenMatch(None, frozenset(SCOPES))))
        return cls(tuple(entries))

    def identify(self, presented: str) -> TokenMatch | None:
        """The name and scopes of the token ``presented``, or None for an unknown one.

        Every entry is compared (no early exit), each in constant time.
        """
        digest = _digest(presented)
        found: TokenMatch | None = None
        for known, match in self.entries:
            if hmac.compare_digest(digest, known):
                found = match
        return found

    def scopes_of(self, presented: str) -> frozenset[str] | None:
        """The scopes ``presented`` grants, or None for an unknown token."""
        match = self.identify(presented)
        return None if match is None else match.scopes


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, presented = authorization.partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else None


__all__ = ["SCOPES", "Credentials", "TokenMatch", "bearer_token"]
