"""Helpers for the governance tests: a snapshot of the seeded defaults."""

from __future__ import annotations

from typing import Any

from isokron.gateway.governance import Governance, build_governance
from isokron.governance.capabilities import CAPABILITIES
from isokron.governance.policies import POLICIES
from isokron.governance.rules import default_constitution
from isokron.substrate.models import CapabilityRow, PolicyEntry


def snapshot(actor_kind: str = "kora", **overrides: Any) -> Governance:
    """The governance of a freshly seeded workspace, with policy values overridden."""
    values = {key: p.default for key, p in POLICIES.items()}
    values.update(overrides)
    policies = tuple(PolicyEntry(k, v) for k, v in values.items())
    caps = CapabilityRow(actor_kind, {c.cap_name: actor_kind in c.grants for c in CAPABILITIES})
    return build_governance("ws-a", actor_kind, policies, caps, default_constitution())
