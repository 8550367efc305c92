-- IsoKron substrate: an erasure may only put the substrate's tombstone in place of a payload.
-- 0003 let the erasing session write any payload so long as it was marked erased; the verifier
-- skips the content check of erased payloads, so that would have let the owner role replace a
-- payload with arbitrary text. Now the new payload must be exactly {erased, reason, erased_at}.
SET LOCAL ROLE isokron_owner;

CREATE OR REPLACE FUNCTION hivex_foundation.refuse_event_log_change() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('isokron.erasing_payload', true) = 'on'
       AND NEW.payload_erased AND NOT OLD.payload_erased
       AND NEW.payload_digest = OLD.payload_digest
       AND jsonb_typeof(NEW.payload) = 'object'
       AND NEW.payload -> 'erased' = 'true'::jsonb
       AND jsonb_typeof(NEW.payload -> 'reason') = 'string'
       AND jsonb_typeof(NEW.payload -> 'erased_at') = 'string'
       AND (SELECT count(*) FROM jsonb_object_keys(NEW.payload)) = 3
       AND (NEW.tenant_id, NEW.seq, NEW.event_id, NEW.actor_id, NEW.event_type, NEW.occurred_at,
            NEW.prev_event_hash, NEW.this_event_hash)
           = (OLD.tenant_id, OLD.seq, OLD.event_id, OLD.actor_id, OLD.event_type, OLD.occurred_at,
              OLD.prev_event_hash, OLD.this_event_hash) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = 'hivex_foundation.event_log is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'IKA01',
        HINT = 'Events enter the log only through hivex_foundation.append_chain_event().';
END
$fn$;

RESET ROLE;
