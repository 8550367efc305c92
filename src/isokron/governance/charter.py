"""The role charter's markdown parser: three sections become ``content_jsonb.sections``.

Operators' own charter files and the default charter (:mod:`isokron.governance.seeds`) go
through :func:`charter_sections_from_markdown`; the result is what the substrate stores and the
provider shows as §1-§3 of the prompt block.
"""

from __future__ import annotations

import re
from typing import TypedDict

from isokron.errors import ConfigError


class CharterSections(TypedDict):
    """The ``sections`` object of a charter's ``content_jsonb``."""

    identity: str
    authority_can_do: list[str]
    authority_cannot_do: list[str]


# The three sections a charter must have, with the heading an operator is told to write.
_IDENTITY = "identity"
_CAN_DO = "authority_can_do"
_CANNOT_DO = "authority_cannot_do"
_SECTION_HEADINGS = {
    _IDENTITY: "## Identity",
    _CAN_DO: "## Authority — can do",
    _CANNOT_DO: "## Authority — cannot do",
}

_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")
# A top-level list item: "- x", "* x", "+ x", "1. x", "1) x" indented by at most one space.
# Deeper-indented lines belong to the item above them (markdown continuation or sub-list).
_BULLET_RE = re.compile(r"^ ?(?:[-*+]|\d{1,3}[.)])\s+(.*\S)\s*$")
# "Authority — can do", "Authority - Can do:", "Can do", "Cannot do", "Can't do" ...
_AUTHORITY_PREFIX = r"(?:authority\s*[—–:-]+\s*)?"
_TITLE_PATTERNS = {
    _IDENTITY: re.compile(r"^identity:?$", re.IGNORECASE),
    _CAN_DO: re.compile(rf"^{_AUTHORITY_PREFIX}can\s+do:?$", re.IGNORECASE),
    _CANNOT_DO: re.compile(
        rf"^{_AUTHORITY_PREFIX}(?:cannot|can\s+not|can['’]t)\s+do:?$", re.IGNORECASE
    ),
}


def _section_for_title(title: str) -> str | None:
    """Return the section a level-2 heading opens, or None for any other heading."""
    normalized = " ".join(title.split())
    for section, pattern in _TITLE_PATTERNS.items():
        if pattern.match(normalized):
            return section
    return None


def _split_sections(md: str) -> dict[str, list[str]]:
    """Group the lines of a charter under the level-2 heading of the section they belong to.

    Lines of unknown level-2 sections (e.g. "## When in doubt") are dropped; level-3+ headings
    stay inside the section they appear in. Headings inside fenced code do not count.
    """
    sections: dict[str, list[str]] = {}
    current: str | None = None
    in_fence = False
    for line in md.splitlines():
        if _FENCE_RE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING_RE.match(line)
        if heading is not None and len(heading.group(1)) <= 2:
            current = _section_for_title(heading.group(2)) if len(heading.group(1)) == 2 else None
            if current is not None:
                if current in sections:
                    raise ConfigError(
                        f"the charter has two '{_SECTION_HEADINGS[current]}' sections; "
                        "merge them into one"
                    )
                sections[current] = []
            continue
        if current is not None:
            sections[current].append(line)
    return sections


def _is_subheading(line: str) -> bool:
    """True for a level-3+ heading inside a section (kept out of the parsed text)."""
    return bool(_HEADING_RE.match(line))


def _paragraphs(lines: list[str]) -> str:
    """Join prose lines the way markdown renders them: soft-wrapped lines become one line."""
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if not line.strip() or _is_subheading(line):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def _bullets(lines: list[str]) -> list[str]:
    """Collect a section's list items; wrapped and indented lines join the item above them.

    Prose before the first item is an introduction and is not an item. After a blank line,
    only indented lines still belong to the previous item, as in markdown.
    """
    items: list[str] = []
    after_blank = False
    for line in lines:
        if not line.strip():
            after_blank = True
            continue
        if _is_subheading(line):
            after_blank = True
            continue
        bullet = _BULLET_RE.match(line)
        if bullet is not None:
            items.append(bullet.group(1).strip())
        elif items and (not after_blank or line.startswith((" ", "\t"))):
            items[-1] = f"{items[-1]} {line.strip()}"
        after_blank = False
    return items


def charter_sections_from_markdown(md: str) -> CharterSections:
    """Parse a role charter's markdown into its ``content_jsonb.sections`` object.

    The charter needs three level-2 sections, in any order: ``## Identity`` (prose),
    ``## Authority — can do`` and ``## Authority — cannot do`` (bullet lists). The shorter
    ``## Can do`` / ``## Cannot do`` headings are accepted too, in any letter case. Other
    sections are allowed and ignored.

    Raises:
        ConfigError: a section is missing, repeated or empty; the message says what to add.
    """
    if not isinstance(md, str) or not md.strip():
        raise ConfigError(
            "the role charter is empty; write a markdown charter with the sections "
            + ", ".join(f"'{h}'" for h in _SECTION_HEADINGS.values())
        )
    raw = _split_sections(md)
    for section, heading in _SECTION_HEADINGS.items():
        if section not in raw:
            raise ConfigError(
                f"the role charter has no '{heading}' section; add a line '{heading}' "
                f"followed by its {'text' if section == _IDENTITY else 'bullet points'}"
            )
    identity = _paragraphs(raw[_IDENTITY])
    can_do = _bullets(raw[_CAN_DO])
    cannot_do = _bullets(raw[_CANNOT_DO])
    if not identity:
        raise ConfigError(
            f"the role charter's '{_SECTION_HEADINGS[_IDENTITY]}' section is empty; "
            "describe who the agent is in at least one sentence"
        )
    for section, items in ((_CAN_DO, can_do), (_CANNOT_DO, cannot_do)):
        if not items:
            raise ConfigError(
                f"the role charter's '{_SECTION_HEADINGS[section]}' section has no bullet "
                "points; list each item on its own line starting with '- '"
            )
    return {"identity": identity, "authority_can_do": can_do, "authority_cannot_do": cannot_do}
