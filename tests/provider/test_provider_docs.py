"""docs/provider.md cannot drift: every tool, setting, environment variable and log tag of the
provider is documented there."""

from __future__ import annotations

import re
from pathlib import Path

import isokron.provider
from isokron.provider.config import ENV_VARS, IsoKronProviderConfig
from isokron.provider.tools import TOOL_NAMES, TOOL_SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "provider.md").read_text(encoding="utf-8")
SOURCE = Path(isokron.provider.__file__).parent
TAG_RE = re.compile(r"\[(?:kora|isokron)\.[a-z_.%]+\]")


def test_every_tool_is_documented() -> None:
    assert {s["name"] for s in TOOL_SCHEMAS} == TOOL_NAMES
    for name in TOOL_NAMES:
        assert f"| `{name}` |" in DOC, name


def test_every_setting_and_environment_variable_is_documented() -> None:
    for field in IsoKronProviderConfig.model_fields:
        assert f"| `{field}` | `{ENV_VARS[field]}` |" in DOC, field


def test_every_log_tag_is_documented() -> None:
    tags: set[str] = set()
    for path in SOURCE.glob("*.py"):
        for tag in TAG_RE.findall(path.read_text(encoding="utf-8")):
            if "%s" in tag:
                tags |= {tag.replace("%s", dep) for dep in ("substrate", "gateway")}
            else:
                tags.add(tag)
    assert len(tags) > 20
    missing = sorted(t for t in tags if f"`{t}`" not in DOC)
    assert not missing, f"undocumented log tags: {missing}"


def test_public_api_is_what_the_package_exports() -> None:
    for name in isokron.provider.__all__:
        assert hasattr(isokron.provider, name), name
    for name in ("install_hermes_plugin", "render_context", "run_demo", "IsoKronMemoryProvider"):
        assert name in isokron.provider.__all__ and name in DOC
