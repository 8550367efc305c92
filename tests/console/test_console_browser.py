"""The console in a real browser (Debian's chromium driven by Playwright).

Walks every panel with data (one screenshot each, into the folder the README names), decides an
escalation and sees its event in the chain view, changes a policy, issues and revokes a token,
downloads the diagnostics bundle, and checks the auditor's read-only session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from browser_flow import PANEL_CHECKS, Walk
from console_support import ConsoleServer, SeededWorkspace, kora_write, run

from isokron.substrate import connection
from isokron.substrate.dsn import SubstrateDSNs


def test_console_walkthrough(
    browser: Any,
    console: ConsoleServer,
    seeded: SeededWorkspace,
    substrate: SubstrateDSNs,
    screenshot_dir: Path,
    tmp_path: Path,
) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    walk = Walk(page, screenshot_dir, "")
    page.goto(console.url + "/")
    walk.shot("00-sign-in")
    walk.sign_in(seeded.operator_token)
    assert seeded.operator_token not in page.url
    shots = walk.every_panel()
    assert len(shots) == len(PANEL_CHECKS)

    walk.decide_escalation(seeded)
    walk.change_policy("policy.kora_rate_limit_per_minute", "45")
    with psycopg.connect(substrate.admin) as conn:
        value = conn.execute(
            "SELECT policy_value FROM public.kora_policy_registry "
            "WHERE workspace_id = %s AND policy_key = 'policy.kora_rate_limit_per_minute'",
            (seeded.workspace_id,),
        ).fetchone()
    assert value is not None and value[0] == 45
    walk.issue_and_revoke_token()
    manifest = walk.download_bundle(tmp_path)
    assert manifest["failed"] == 0 and manifest["workspace_id"] == seeded.workspace_id
    assert walk.errors == [], walk.errors
    print(f"\nbrowser: {len(shots)} panels rendered and captured in {screenshot_dir}")


def test_chain_live_tail_shows_new_events(
    browser: Any, console: ConsoleServer, seeded: SeededWorkspace, substrate: SubstrateDSNs
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    walk = Walk(page, Path("/tmp"), "unused-")
    page.goto(console.url + "/")
    walk.sign_in(seeded.operator_token)
    walk.open("chain")

    async def agent_writes() -> None:

        conn = await connection.connect(substrate.admin)
        try:
            await kora_write(
                conn,
                seeded,
                "iso_node_create",
                {"node_type": "fact", "title": "tail me", "content": "live"},
            )
        finally:
            await conn.close()

    run(agent_writes())
    page.wait_for_selector("#ik-chain-rows tr.ik-new[data-type='kora.node.created']")
    page.select_option("#ik-f-actor", "operator")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#ik-chain-rows tr')].every("
        "r => r.children[3].textContent === 'operator')"
    )
    assert walk.errors == []


def test_auditor_session_is_read_only_in_the_browser(
    browser: Any, console: ConsoleServer, seeded: SeededWorkspace, screenshot_dir: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    walk = Walk(page, screenshot_dir, "")
    page.goto(console.url + "/")
    walk.sign_in(seeded.operator_token, read_only=True)
    walk.read_only_has_no_controls()
    walk.shot("15-read-only-auditor")
    assert walk.errors == []


HOSTILE = '<img id="ik-xss" src="x" onerror="window.__xss = 1">'


def test_agent_written_markup_is_shown_as_text(
    browser: Any, console: ConsoleServer, seeded: SeededWorkspace, substrate: SubstrateDSNs
) -> None:
    async def hostile_writes() -> None:

        from isokron.substrate import writes

        conn = await connection.connect(substrate.admin)
        try:
            await kora_write(
                conn,
                seeded,
                "iso_node_create",
                {"node_type": "fact", "title": HOSTILE, "content": HOSTILE},
            )
            await kora_write(
                conn,
                seeded,
                "write_scratchpad_entry",
                writes.scratchpad_args(kind="observation", summary=HOSTILE, content=HOSTILE),
            )
        finally:
            await conn.close()

    run(hostile_writes())
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    walk = Walk(page, Path("/tmp"), "unused-")
    page.goto(console.url + "/")
    walk.sign_in(seeded.operator_token)
    shown = 0
    for panel in ("graph", "scratchpad", "chain"):
        walk.open(panel)
        if panel == "chain":
            page.click("#ik-chain-rows tr[data-type='kora.scratchpad.written']")
            page.wait_for_selector("#ik-payload")
        assert page.query_selector("#ik-xss") is None, panel
        assert page.evaluate("window.__xss") is None, panel
        shown += "<img id=" in page.inner_text("body")
    print(f"\nhostile markup: rendered as text in {shown}/3 panels, executed in 0")
    assert shown == 3
