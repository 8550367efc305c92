"""The diagnostics bundle: allowlist, per-source failure isolation, shape-based redaction."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest
from console_support import OPERATOR_COPY, PLANTED_SECRETS, ConsoleServer, SeededWorkspace, run

from isokron.console import diagnostics, panels
from isokron.console.checkpoints import CheckpointStore
from isokron.console.redaction import find_credentials
from isokron.substrate.connection import create_pool
from isokron.substrate.dsn import SubstrateDSNs


def download(console: ConsoleServer, token: str) -> zipfile.ZipFile:
    client = httpx.Client(base_url=console.url)
    assert client.post("/api/session", json={"token": token}).status_code == 200
    resp = client.get("/api/diagnostics/bundle")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/zip"
    assert resp.headers["content-disposition"].startswith("attachment; filename=")
    return zipfile.ZipFile(io.BytesIO(resp.content))


def all_text(bundle: zipfile.ZipFile) -> dict[str, str]:
    return {name: bundle.read(name).decode("utf-8") for name in bundle.namelist()}


def test_bundle_of_a_workspace_seeded_with_secrets_holds_none_of_them(
    console: ConsoleServer, seeded: SeededWorkspace
) -> None:
    bundle = download(console, seeded.operator_token)
    files = all_text(bundle)
    # The secrets are really in what the bundle is built from (the scratchpad panel's data).
    client = httpx.Client(base_url=console.url)
    client.post("/api/session", json={"token": seeded.operator_token})
    source = client.get("/api/panels/scratchpad").text
    assert all(secret in source for secret in PLANTED_SECRETS.values())
    assert seeded.kora_token in source
    planted = {
        **PLANTED_SECRETS,
        "operator_wsk": seeded.operator_token,
        "kora_wsk": seeded.kora_token,
    }
    found = {
        name: [label for label, secret in planted.items() if secret in text]
        for name, text in files.items()
    }
    found = {k: v for k, v in found.items() if v}
    shapes_left = {name: find_credentials(text) for name, text in files.items()}
    shapes_left = {k: v for k, v in shapes_left.items() if v}
    manifest = json.loads(files["manifest.json"])
    everything = "\n".join(files.values())
    print(
        f"\nbundle: {len(files)} files, {len(planted)} planted secrets, "
        f"{sum(len(v) for v in found.values())} found, {manifest['redactions']} values redacted, "
        f"{manifest['withheld']} files withheld"
    )
    assert found == {} and shapes_left == {}
    # The planted secrets were really in what the bundle was built from.
    assert manifest["redactions"] >= len(PLANTED_SECRETS)
    # Operator copy that merely names wsk_* survives.
    for copy in OPERATOR_COPY:
        assert copy in everything, copy


def test_bundle_is_exactly_the_allowlist(console: ConsoleServer, seeded: SeededWorkspace) -> None:
    bundle = download(console, seeded.operator_token)
    names = set(bundle.namelist())
    expected = {f"sources/{s}.json" for s in diagnostics.BUNDLE_SOURCES}
    assert names == expected | {"manifest.json", "README.txt"}
    manifest = json.loads(bundle.read("manifest.json"))
    assert [s["name"] for s in manifest["sources"]] == list(diagnostics.BUNDLE_SOURCES)
    assert manifest["failed"] == 0, manifest
    assert set(diagnostics.BUNDLE_SOURCES) <= set(panels.PANELS)
    # "10 panels + runbooks manifest" in the seed; here every panel + the runbooks manifest.
    assert "runbooks" in diagnostics.BUNDLE_SOURCES


async def _closed_context(substrate: SubstrateDSNs, tmp: Path) -> panels.PanelContext:
    """A context whose database is gone: pools closed, admin DSN naming a dropped port."""
    admin = await create_pool(substrate.admin, min_size=0, max_size=1)
    reader = await create_pool(substrate.reader, min_size=0, max_size=1)
    await admin.close()
    await reader.close()
    return panels.PanelContext(
        workspace_id="nowhere",
        admin_dsn="postgresql://nobody@127.0.0.1:1/none",
        admin_pool=admin,
        reader_pool=reader,
        checkpoints=CheckpointStore(tmp / "missing-and-unwritable\0"),
        gateway_url=None,
        hermes_home=None,
    )


def test_every_source_failing_still_yields_a_bundle_saying_so(
    substrate: SubstrateDSNs, tmp_path: Path
) -> None:
    async def go() -> tuple[bytes, diagnostics.BundleReport]:
        ctx = await _closed_context(substrate, tmp_path)

        def broken(name: str) -> diagnostics.Source:
            real = diagnostics.allowlisted_sources()[name]

            async def source(c: panels.PanelContext) -> object:
                await real(c)  # the database-backed ones fail for real here
                raise RuntimeError(f"{name}: source unavailable (token wsk_{'Q' * 40})")

            return source

        return await diagnostics.build_bundle(
            ctx, {n: broken(n) for n in diagnostics.BUNDLE_SOURCES}
        )

    data, report = run(go())
    bundle = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(bundle.read("manifest.json"))
    print(
        f"\nall-failing bundle: {manifest['failed']}/{len(manifest['sources'])} sources failed, "
        f"{len(data)} bytes"
    )
    assert manifest["ok"] == 0 and manifest["failed"] == len(diagnostics.BUNDLE_SOURCES)
    for entry in manifest["sources"]:
        assert entry["status"] == "failed" and entry["error"]
        assert "wsk_QQQQ" not in entry["error"]  # the error text is redacted too
        assert "error" in json.loads(bundle.read(entry["file"]))
    assert "README.txt" in bundle.namelist()


def test_database_gone_fails_the_database_sources_only(
    substrate: SubstrateDSNs, tmp_path: Path
) -> None:
    async def go() -> diagnostics.BundleReport:
        ctx = await _closed_context(substrate, tmp_path)
        return (await diagnostics.build_bundle(ctx))[1]

    report = run(go())
    status = {s["name"]: s["status"] for s in report.sources}
    assert status["runbooks"] == "ok"
    assert status["gates"] == "ok"  # the gates report their own failures, in red
    failed = [n for n, s in status.items() if s == "failed"]
    assert set(failed) >= {"chain", "policies", "tokens", "scratchpad", "graph", "activity"}
    print(f"\ndatabase gone: {len(failed)} sources failed, {len(status) - len(failed)} still ok")


@pytest.mark.parametrize("copy", OPERATOR_COPY)
def test_operator_copy_is_in_the_console_itself(copy: str) -> None:
    runbooks = json.dumps(panels.runbooks_manifest(), ensure_ascii=False)
    titles = [t for _, t, _ in __import__("isokron.console.gates", fromlist=["GATES"]).GATES]
    assert copy in runbooks or copy in titles
