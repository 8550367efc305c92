"""Streaming chain verification: every finding kind, checkpoints and the report shape."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from uuid import UUID, uuid5

import pytest

from isokron.chain import (
    FINDING_KINDS,
    GENESIS_HASH,
    MAX_PROBLEMS,
    ChainRecord,
    Checkpoint,
    make_record,
    payload_digest,
    record_hash,
    verify_against_checkpoint,
    verify_records,
)
from isokron.errors import ChainError

TENANT = UUID("11111111-2222-4333-8444-555555555555")
OTHER_TENANT = UUID("99999999-8888-4777-8666-555555555555")
ACTOR = UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
BASE_US = 1_736_933_400_000_000


def _event_id(tenant: UUID, seq: int, variant: str = "") -> UUID:
    return uuid5(tenant, f"event-{seq}{variant}")


def _seal(
    prev: bytes,
    seq: int,
    *,
    tenant: UUID = TENANT,
    event_type: str = "memory.write",
    payload: str | None = None,
    variant: str = "",
) -> ChainRecord:
    return make_record(
        prev_event_hash=prev,
        tenant_id=tenant,
        seq=seq,
        event_id=_event_id(tenant, seq, variant),
        actor_id=ACTOR,
        occurred_at_us=BASE_US + seq * 1_000_001,
        event_type=event_type,
        payload_text=payload if payload is not None else f'{{"n": {seq}, "note": "event {seq}"}}',
    )


def build_chain(n: int, tenant: UUID = TENANT) -> list[ChainRecord]:
    chain: list[ChainRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        record = _seal(prev, seq, tenant=tenant)
        chain.append(record)
        prev = record.this_event_hash
    return chain


def reseal_from(chain: list[ChainRecord], start: int) -> list[ChainRecord]:
    """Recompute links and hashes from list index ``start`` on: a consistent rewrite."""
    out = list(chain[:start])
    prev = out[-1].this_event_hash if out else GENESIS_HASH
    for record in chain[start:]:
        fixed = dataclasses.replace(record, prev_event_hash=prev)
        fixed = dataclasses.replace(fixed, this_event_hash=record_hash(fixed))
        out.append(fixed)
        prev = fixed.this_event_hash
    return out


def kinds(records: list[ChainRecord], **kwargs: object) -> list[tuple[str, int | None]]:
    report = verify_records(records, **kwargs)  # type: ignore[arg-type]
    return [(p.kind, p.seq) for p in report.problems]


def test_clean_chain_verifies() -> None:
    chain = build_chain(10)
    report = verify_records(chain)
    assert report.ok
    assert report.events_checked == 10
    assert report.head_seq == 10
    assert report.head_hash == chain[-1].this_event_hash
    assert report.first_problem is None
    assert report.problems == ()
    assert report.tenant_id == TENANT


def test_empty_chain() -> None:
    report = verify_records([])
    assert report.ok
    assert report.events_checked == 0
    assert report.head_seq is None
    assert report.head_hash is None


def test_accepts_a_one_shot_iterator() -> None:
    def stream() -> Iterator[ChainRecord]:
        yield from build_chain(50)

    assert verify_records(stream()).events_checked == 50


def test_edited_payload_text_is_a_payload_mismatch() -> None:
    chain = build_chain(6)
    chain[3] = dataclasses.replace(chain[3], payload_text='{"n": 4, "note": "forged"}')
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("payload_mismatch", 4)]
    assert report.first_problem is not None
    assert "seq 4" in report.first_problem.message
    assert str(chain[3].event_id) in report.first_problem.message
    # Without payload checks only hashes and links are verified.
    assert verify_records(chain, check_payloads=False).ok


def test_edited_payload_with_new_digest_is_a_hash_mismatch() -> None:
    chain = build_chain(6)
    text = '{"n": 4, "note": "forged"}'
    chain[3] = dataclasses.replace(chain[3], payload_text=text, payload_digest=payload_digest(text))
    assert kinds(chain) == [("hash_mismatch", 4)]


def test_edited_event_type_is_a_hash_mismatch() -> None:
    chain = build_chain(6)
    chain[2] = dataclasses.replace(chain[2], event_type="memory.delete")
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("hash_mismatch", 3)]
    assert "edited after it was written" in report.problems[0].message


def test_edited_non_ascii_event_type_is_a_hash_mismatch() -> None:
    chain = build_chain(3)
    chain[1] = _seal(chain[0].this_event_hash, 2, event_type="mémoire.écrite")
    chain[2] = reseal_from(chain, 2)[2]
    assert verify_records(chain).ok
    chain[1] = dataclasses.replace(chain[1], event_type="memoire.ecrite")
    assert kinds(chain) == [("hash_mismatch", 2)]


def test_deleted_event_is_a_seq_gap() -> None:
    chain = build_chain(8)
    del chain[4]
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("seq_gap", 6)]
    assert "seq 5 is missing" in report.problems[0].message


def test_deleted_range_names_the_range() -> None:
    chain = build_chain(10)
    del chain[3:6]
    report = verify_records(chain)
    assert report.problems[0].kind == "seq_gap"
    assert "seqs 4 to 6 are missing" in report.problems[0].message


def test_deleted_last_event_is_only_caught_by_a_checkpoint() -> None:
    chain = build_chain(8)
    checkpoint = Checkpoint(TENANT, 8, chain[-1].this_event_hash)
    truncated = chain[:-1]
    assert verify_records(truncated).ok
    report = verify_records(truncated, checkpoints=[checkpoint])
    assert [(p.kind, p.seq) for p in report.problems] == [("checkpoint_mismatch", None)]
    assert "ends at seq 7" in report.problems[0].message


def test_inserted_event_with_duplicate_seq_is_a_fork() -> None:
    chain = build_chain(6)
    forged = _seal(chain[2].this_event_hash, 4, variant="-forged")
    chain.insert(3, forged)
    # forged seq 4 links correctly; the original seq 4 is then a fork, and seq 5 no longer
    # links to the head (the forged event).
    assert kinds(chain) == [("fork", 4), ("broken_link", 5)]


def test_inserted_event_with_renumbering_breaks_hashes() -> None:
    chain = build_chain(6)
    forged = _seal(chain[2].this_event_hash, 4, variant="-forged")
    shifted = [dataclasses.replace(r, seq=r.seq + 1) for r in chain[3:]]
    tampered = chain[:3] + [forged] + shifted
    found = kinds(tampered)
    assert ("broken_link", 5) in found
    assert [k for k in found if k[0] == "hash_mismatch"] == [
        ("hash_mismatch", s) for s in (5, 6, 7)
    ]


def test_swapped_events_are_detected() -> None:
    chain = build_chain(6)
    chain[2], chain[3] = chain[3], chain[2]
    found = kinds(chain)
    assert found == [("seq_gap", 4), ("fork", 3)]
    report = verify_records(chain)
    assert "backwards" in report.problems[1].message
    assert report.head_seq == 6


def test_swapped_seq_numbers_break_hashes() -> None:
    chain = build_chain(6)
    a, b = chain[2], chain[3]
    chain[2] = dataclasses.replace(b, seq=3)
    chain[3] = dataclasses.replace(a, seq=4)
    found = {k for k, _ in kinds(chain)}
    assert "hash_mismatch" in found
    assert "broken_link" in found


def test_duplicate_seq_is_a_fork() -> None:
    chain = build_chain(5)
    chain.insert(3, chain[2])
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("fork", 3)]
    assert "more than once" in report.problems[0].message


def test_repeated_seq_inside_filled_gap_is_a_fork() -> None:
    chain = build_chain(6)
    reordered = [chain[0], chain[1], chain[3], chain[2], chain[2], chain[4], chain[5]]
    found = kinds(reordered)
    assert found == [("seq_gap", 4), ("fork", 3), ("fork", 3)]


def test_wrong_genesis_link() -> None:
    chain = build_chain(4)
    bad_first = _seal(b"\x01" * 32, 1)
    tampered = reseal_from([bad_first, *chain[1:]], 1)
    report = verify_records(tampered)
    assert [(p.kind, p.seq) for p in report.problems] == [("genesis", 1)]
    assert "genesis" in report.problems[0].message


def test_chain_not_starting_at_one() -> None:
    chain = build_chain(5)
    report = verify_records(chain[2:])
    assert [(p.kind, p.seq) for p in report.problems] == [("genesis", 3)]
    assert report.head_seq == 5


def test_late_seq_one_after_bad_start_is_a_fork() -> None:
    chain = build_chain(3)
    assert kinds([chain[1], chain[2], chain[0]]) == [("genesis", 2), ("fork", 1)]


def test_broken_link_only() -> None:
    chain = build_chain(5)
    relinked = dataclasses.replace(chain[2], prev_event_hash=b"\x02" * 32)
    chain[2] = dataclasses.replace(relinked, this_event_hash=record_hash(relinked))
    chain[3:] = reseal_from(chain, 3)[3:]
    assert kinds(chain) == [("broken_link", 3)]


def test_event_of_another_tenant_is_a_tenant_mismatch() -> None:
    chain = build_chain(4)
    foreign = _seal(chain[1].this_event_hash, 3, tenant=OTHER_TENANT)
    chain[2] = foreign
    chain[3:] = reseal_from(chain, 3)[3:]
    assert kinds(chain) == [("tenant_mismatch", 3)]


def test_expected_tenant_mismatch() -> None:
    chain = build_chain(3)
    found = kinds(chain, expected_tenant=OTHER_TENANT)
    assert found == [("tenant_mismatch", s) for s in (1, 2, 3)]
    assert verify_records(chain, expected_tenant=TENANT).ok


def test_malformed_fields_do_not_crash() -> None:
    chain = build_chain(3)
    chain[1] = dataclasses.replace(chain[1], payload_digest=bytes(31))
    chain[2] = dataclasses.replace(chain[2], seq=2**64)
    report = verify_records(chain, check_payloads=False)
    assert not report.ok
    assert {p.kind for p in report.problems} >= {"hash_mismatch"}


def test_undecodable_payload_is_a_payload_mismatch() -> None:
    chain = build_chain(2)
    chain[1] = dataclasses.replace(chain[1], payload_text="\ud800")
    assert kinds(chain) == [("payload_mismatch", 2)]


def test_erased_payload_still_verifies() -> None:
    chain = build_chain(5)
    chain[2] = dataclasses.replace(chain[2], payload_text=None)
    assert verify_records(chain).ok


def test_consistent_rewrite_passes_alone_but_fails_the_checkpoint() -> None:
    chain = build_chain(10)
    checkpoint = Checkpoint(TENANT, 7, chain[6].this_event_hash)
    text = '{"n": 3, "note": "rewritten history"}'
    rewritten = list(chain)
    rewritten[2] = dataclasses.replace(
        chain[2], payload_text=text, payload_digest=payload_digest(text)
    )
    rewritten = reseal_from(rewritten, 2)

    plain = verify_records(rewritten)
    assert plain.ok, plain.problems

    report = verify_records(rewritten, checkpoints=[checkpoint])
    assert [(p.kind, p.seq) for p in report.problems] == [("checkpoint_mismatch", 7)]
    assert "rewritten" in report.problems[0].message
    finding = verify_against_checkpoint(report, checkpoint)
    assert finding is not None and finding.kind == "checkpoint_mismatch"
    assert report.checkpoints[0].ok is False

    original = verify_records(chain, checkpoints=[checkpoint])
    assert original.ok
    assert verify_against_checkpoint(original, checkpoint) is None
    assert original.checkpoints[0].ok


def test_checkpoint_at_head_without_passing_it() -> None:
    chain = build_chain(5)
    report = verify_records(chain)
    assert (
        verify_against_checkpoint(report, Checkpoint(TENANT, 5, chain[-1].this_event_hash)) is None
    )
    wrong = verify_against_checkpoint(report, Checkpoint(TENANT, 5, b"\x00" * 32))
    assert wrong is not None and wrong.kind == "checkpoint_mismatch"


def test_unchecked_checkpoint_fails_closed() -> None:
    chain = build_chain(5)
    report = verify_records(chain)
    finding = verify_against_checkpoint(report, Checkpoint(TENANT, 2, chain[1].this_event_hash))
    assert finding is not None
    assert "was not checked" in finding.message


def test_checkpoint_beyond_head_and_on_empty_chain() -> None:
    chain = build_chain(3)
    cp = Checkpoint(TENANT, 9, bytes(32))
    finding = verify_against_checkpoint(verify_records(chain), cp)
    assert finding is not None and "ends at seq 3" in finding.message
    empty = verify_against_checkpoint(verify_records([]), cp)
    assert empty is not None and "empty" in empty.message


def test_checkpoint_of_another_tenant() -> None:
    chain = build_chain(3)
    cp = Checkpoint(OTHER_TENANT, 2, chain[1].this_event_hash)
    report = verify_records(chain, checkpoints=[cp])
    assert [(p.kind, p.seq) for p in report.problems] == [("checkpoint_mismatch", 2)]
    assert verify_against_checkpoint(verify_records(chain), cp) is not None


def test_checkpoint_dict_round_trip() -> None:
    cp = Checkpoint(TENANT, 42, bytes(range(32)))
    data = json.loads(json.dumps(cp.to_dict()))
    assert data["this_event_hash"] == bytes(range(32)).hex()
    assert Checkpoint.from_dict(data) == cp


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"tenant_id": str(TENANT), "seq": 1},
        {"tenant_id": "nope", "seq": 1, "this_event_hash": "00" * 32},
        {"tenant_id": str(TENANT), "seq": 0, "this_event_hash": "00" * 32},
        {"tenant_id": str(TENANT), "seq": True, "this_event_hash": "00" * 32},
        {"tenant_id": str(TENANT), "seq": 1, "this_event_hash": "00" * 31},
        {"tenant_id": str(TENANT), "seq": 1, "this_event_hash": "zz" * 32},
        {"tenant_id": str(TENANT), "seq": 1, "this_event_hash": 5},
    ],
)
def test_checkpoint_from_dict_rejects_malformed(data: dict[str, object]) -> None:
    with pytest.raises(ChainError):
        Checkpoint.from_dict(data)


def test_problems_are_capped_but_counted() -> None:
    chain = build_chain(150)
    tampered = [dataclasses.replace(r, event_type="x") for r in chain]
    report = verify_records(tampered)
    assert len(report.problems) == MAX_PROBLEMS
    assert report.problem_count == 150
    assert report.first_problem == report.problems[0]


def test_report_to_dict_is_json_with_hex() -> None:
    chain = build_chain(3)
    chain[1] = dataclasses.replace(chain[1], event_type="x")
    cp = Checkpoint(TENANT, 3, chain[2].this_event_hash)
    data = json.loads(json.dumps(verify_records(chain, checkpoints=[cp]).to_dict()))
    assert data["ok"] is False
    assert data["head_hash"] == chain[2].this_event_hash.hex()
    assert data["first_problem"]["kind"] == "hash_mismatch"
    assert data["first_problem"]["event_id"] == str(chain[1].event_id)
    assert data["checkpoints"][0]["ok"] is True


def test_every_reported_kind_is_documented() -> None:
    assert set(FINDING_KINDS) == {
        "genesis",
        "seq_gap",
        "fork",
        "broken_link",
        "hash_mismatch",
        "payload_mismatch",
        "tenant_mismatch",
        "checkpoint_mismatch",
        "header_mismatch",
    }
