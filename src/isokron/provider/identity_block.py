"""The provider's identity block: rendered from the read cache, memoised, and re-offered.

:class:`IdentityBlock` holds what the provider remembers about the §1–§6 block between hooks:
the last rendering (re-used while none of its inputs changed) and whether this session's system
prompt said NOT VERIFIED, so ``prefetch`` can carry the re-verified block once the substrate
answers again (Hermes keeps a session's system prompt). Rendering itself is
:func:`isokron.provider.prompt_block.render_prompt_block`.
"""

from __future__ import annotations

from typing import Any

from isokron.provider import cache as names
from isokron.provider.cache import TTLCache
from isokron.provider.prompt_block import render_prompt_block, stale_note
from isokron.provider.reader import IdentityFailure, SubstrateReader
from isokron.substrate.models import RoleCharter

REVERIFIED_HEADING = (
    "IsoKron identity re-verified after an outage — this replaces the NOT VERIFIED notice "
    "in the system prompt:"
)
#: The reads the block shows.
SHOWN = (names.CHARTER, names.POLICIES, names.CAPABILITIES, names.EVENTS)


class IdentityBlock:
    """The block's memo and whether the session's system prompt showed it unverified."""

    def __init__(self) -> None:
        self.shown_unverified = False
        self._memo: tuple[tuple[Any, ...], str] | None = None

    def for_system_prompt(
        self, reader: SubstrateReader, cache: TTLCache, ws: str, model: str | None
    ) -> str:
        """The block for the system prompt; remembers whether it was verified."""
        text, verified = self.render(reader, cache, ws, model)
        self.shown_unverified = not verified
        return text

    def reverified(
        self, cache: TTLCache, reader: SubstrateReader, ws: str, model: str | None
    ) -> str:
        """The identity block, when this session's system prompt said NOT VERIFIED (built during
        an outage) and the charter has been verified since; Hermes keeps a session's system
        prompt, so the turn context is where the model learns who it is after all."""
        if not self.shown_unverified:
            return ""
        if not isinstance(cache.get_stale(ws, names.CHARTER), RoleCharter):
            return ""
        block, verified = self.render(reader, cache, ws, model)
        return f"{REVERIFIED_HEADING}\n{block}" if verified else ""

    def render(
        self, reader: SubstrateReader, cache: TTLCache, ws: str, model: str | None
    ) -> tuple[str, bool]:
        """The block, and whether its identity is verified."""
        reader.warm(ws, SHOWN)
        values = {n: cache.get_stale(ws, n) for n in SHOWN}
        charter = values[names.CHARTER]
        stale = any(values[n] is not None and not cache.has(ws, n) for n in SHOWN)
        note = stale_note(reader.breaker.last_error) if stale and reader.breaker.down else None
        verified = isinstance(charter, RoleCharter)
        # The block is re-rendered only when one of its inputs was replaced in the cache: the
        # memo holds the input objects themselves and compares them by identity.
        inputs = (ws, note, model, *(values[n] for n in SHOWN))
        memo = self._memo
        if (
            memo is not None
            and len(memo[0]) == len(inputs)
            and all(a is b for a, b in zip(memo[0], inputs, strict=True))
        ):
            return memo[1], verified
        text = render_prompt_block(
            workspace_id=ws,
            charter=None if isinstance(charter, IdentityFailure) else charter,
            identity_error=charter.message if isinstance(charter, IdentityFailure) else None,
            policies=_verified_or_none(values[names.POLICIES]),
            capabilities=_verified_or_none(values[names.CAPABILITIES]),
            recent_events=values[names.EVENTS],
            note=note,
            model=model,
        )
        self._memo = (inputs, text)
        return text, verified


def _verified_or_none(value: Any) -> Any:
    """Policies or capabilities the chain does not vouch for are not presented (invariant 4):
    the block shows them as unavailable; the failure was logged at ERROR when read."""
    return None if isinstance(value, IdentityFailure) else value
