"""IsoKron's per-tenant SHA-256 hash chain: byte form, verification and export bundles.

Pure Python (hashlib only), no database access: everything here takes records and files.
The byte-exact specification for auditors is ``docs/chain.md``.
"""

from isokron.chain.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    BundleHeader,
    format_timestamp,
    read_bundle,
    record_to_dict,
    verify_bundle,
    write_bundle,
)
from isokron.chain.hashing import (
    CHAIN_FORMAT,
    DIGEST_SIZE,
    GENESIS_HASH,
    HASH_PREFIX,
    ChainRecord,
    compute_event_hash,
    datetime_to_us,
    event_hash_input,
    make_record,
    payload_digest,
    record_hash,
    record_hash_input,
    us_to_datetime,
)
from isokron.chain.verify import (
    FINDING_KINDS,
    MAX_PROBLEMS,
    Checkpoint,
    CheckpointResult,
    Finding,
    SuspectEvent,
    VerifyReport,
    add_findings,
    report_from_suspects,
    verify_against_checkpoint,
    verify_records,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "CHAIN_FORMAT",
    "DIGEST_SIZE",
    "FINDING_KINDS",
    "GENESIS_HASH",
    "HASH_PREFIX",
    "MAX_PROBLEMS",
    "BundleHeader",
    "ChainRecord",
    "Checkpoint",
    "CheckpointResult",
    "Finding",
    "SuspectEvent",
    "VerifyReport",
    "add_findings",
    "compute_event_hash",
    "datetime_to_us",
    "event_hash_input",
    "format_timestamp",
    "make_record",
    "payload_digest",
    "read_bundle",
    "record_hash",
    "record_hash_input",
    "record_to_dict",
    "report_from_suspects",
    "us_to_datetime",
    "verify_against_checkpoint",
    "verify_bundle",
    "verify_records",
    "write_bundle",
]
