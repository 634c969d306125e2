"""The decision cache: a policy's answer for an input it has already decided (config ``cache``).

Off by default. A policy's answer is a function of the compiled bundle and the input document, so
the key is exactly those: the ``CompiledPolicy`` object (a new activation, even of a bundle with
the same revision string, empties the cache) and a SHA-256 over the full JSON input the engine
would see, minus ``now_ns``. Everything else in the input (subject, tenant, tool, arguments,
approvals, context, lookups) is in the key, so an entry can only answer the very same input.

What the cache never does:

- answer past ``max_age_seconds`` after the evaluation, or past the subject token's ``exp``;
- answer for a policy whose modules mention ``now_ns`` (``time.now_ns()``, ``input.now_ns``),
  ``rand.`` or ``uuid.``: such a bundle is evaluated every time (found at activation);
- answer a request carrying approval tokens (approvals expire on their own clock);
- keep a policy error: only well-formed policy answers are stored.

Only the policy's result is reused; every decision still gets its own id, request id and time.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable

from .config import CacheConfig
from .engine import CompiledPolicy, PolicyResult

#: Rego that makes an answer depend on more than the input and the bundle.
UNCACHEABLE_RE = re.compile(r"now_ns|\brand\.|\buuid\.")
HIT, MISS, BYPASS = "hit", "miss", "bypass"


def reads_clock(policy: CompiledPolicy) -> bool:
    """Whether any module could read the time (or randomness); comments count too, erring
    on the side of evaluating."""
    return any(UNCACHEABLE_RE.search(source) for source in policy.contents.modules.values())


class DecisionCache:
    """A bounded LRU of policy results, for one active policy at a time."""

    def __init__(self, max_entries: int, max_age_seconds: float):
        self._max_entries = max_entries
        self._max_age_ns = int(max_age_seconds * 1e9)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[PolicyResult, int]] = OrderedDict()
        self._policy: CompiledPolicy | None = None
        self._bypass = False

    @classmethod
    def from_config(cls, config: CacheConfig) -> DecisionCache | None:
        return cls(config.max_entries, config.max_age_seconds) if config.enabled else None

    def __len__(self) -> int:
        return len(self._entries)

    def decide(self, policy: CompiledPolicy, key_json: str, input_json: str, now_ns: int,
               expires_ns: int, evaluate: Callable[[str], PolicyResult]
               ) -> tuple[PolicyResult, str]:
        """The result for ``input_json`` and whether it came from the cache (HIT, MISS, BYPASS).

        ``key_json`` is the input without ``now_ns``; ``expires_ns`` the latest time the answer
        may be reused (the token's expiry). ``evaluate``'s PolicyError passes through."""
        if self._bypasses(policy):
            return evaluate(input_json), BYPASS
        key = hashlib.sha256(key_json.encode("utf-8")).digest()
        with self._lock:
            entry = self._entries.get(key) if self._policy is policy else None
            if entry is not None and now_ns < entry[1]:
                self._entries.move_to_end(key)
                return entry[0], HIT
        result = evaluate(input_json)
        until = min(now_ns + self._max_age_ns, expires_ns)
        with self._lock:
            if self._policy is policy and now_ns < until:
                self._entries[key] = (result, until)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
        return result, MISS

    def _bypasses(self, policy: CompiledPolicy) -> bool:
        """Follow the active policy, emptying the cache when it changes; True when ``policy``
        must always be evaluated. Entries only ever belong to ``self._policy``, and lookups
        and inserts check it under the lock, so no entry answers for another policy."""
        with self._lock:
            if policy is self._policy:
                return self._bypass
        bypass = reads_clock(policy)
        with self._lock:
            self._entries.clear()
            self._policy, self._bypass = policy, bypass
        return bypass
