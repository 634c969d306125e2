"""Verified bearer tokens, remembered until they expire: one signature check per token.

A gateway sends the same user's token with every call; verifying an RS256 signature costs about
as much as a policy evaluation. ``CachedVerifier`` wraps a ``TokenVerifier`` and keeps each
successfully verified ``Subject`` under SHA-256(token) and the audience it was verified for (a
token is never accepted for another server from the cache), in a bounded LRU:

- an entry is used only while ``now`` (the request's clock, as for verification) is before the
  token's ``exp`` and before ``max_age_seconds`` after it was verified, so a key removed from
  the issuer's JWKS stops working within ``max_age_seconds``;
- refusals are never cached: a bad token is checked again every time (it costs the caller as
  much as it costs us);
- the raw token is not kept, only its hash.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from .model import Subject

if TYPE_CHECKING:  # identity.py builds this wrapper
    from .identity import TokenVerifier


class CachedVerifier:
    """A ``TokenVerifier`` that verifies each distinct token once per ``max_age_seconds``."""

    def __init__(self, verifier: TokenVerifier, max_entries: int, max_age_seconds: float):
        self._verifier = verifier
        self._max_entries = max_entries
        self._max_age = max_age_seconds
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[bytes, str], tuple[Subject, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str, audience: str, now: float) -> Subject:
        key = (hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest(), audience)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if now < entry[1]:
                    self._entries.move_to_end(key)
                    return entry[0]
                del self._entries[key]
        subject = self._verifier.verify(token, audience, now)
        until = min(float(subject.expires_at), now + self._max_age)
        with self._lock:
            self._entries[key] = (subject, until)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return subject
