"""Mirror health: which mirror to ask first for each item, and when to give up on one.

Owns: the ranking (from probes, else catalogue order) and the failover rule: a mirror whose
requests keep failing (consecutive retryable failures with no success between them) is marked
down and its pending items go to the next mirror. Pure policy: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from microns_get.plan.model import RemoteCopy

DOWN_AFTER_CONSECUTIVE_FAILURES = 6


@dataclass
class MirrorHealth:
    rank: list[str] = field(default_factory=list)  # providers, best first
    failures: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    threshold: int = DOWN_AFTER_CONSECUTIVE_FAILURES

    def order(self, copies: Sequence[RemoteCopy]) -> list[RemoteCopy]:
        """Healthy mirrors first, in rank order; down mirrors last (still a last resort)."""

        def key(copy: RemoteCopy) -> tuple[int, int]:
            position = self.rank.index(copy.provider) if copy.provider in self.rank else 99
            return (1 if copy.provider in self.down else 0, position)

        return sorted(copies, key=key)

    def success(self, provider: str) -> None:
        self.failures[provider] = 0

    def failure(self, provider: str) -> bool:
        """Count a failed request; True when this failure marks the mirror down."""
        self.failures[provider] = self.failures.get(provider, 0) + 1
        if provider not in self.down and self.failures[provider] >= self.threshold:
            self.down.add(provider)
            return True
        return False

    def is_down(self, provider: str) -> bool:
        return provider in self.down

    def all_down(self, providers: Sequence[str]) -> bool:
        return all(p in self.down for p in providers)
