-- Forwarding: leases and history of deliveries, and the incremental-read cursor for table consumers.

-- A claim sets lease_token; a result is recorded only by the holder of the current token, so a
-- worker whose lease expired (and whose delivery another worker re-claimed) cannot overwrite it.
ALTER TABLE deliveries
    ADD COLUMN lease_token   uuid,
    ADD COLUMN leased_by     text,
    ADD COLUMN last_error    text,
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN dead_at       timestamptz,
    ADD COLUMN redrive_count integer NOT NULL DEFAULT 0;

-- Claims look for due pending deliveries of one endpoint.
CREATE INDEX deliveries_endpoint_due_idx ON deliveries (endpoint, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_dead_idx ON deliveries (endpoint) WHERE status = 'dead';

-- `events list` pages by creation time.
CREATE INDEX payment_events_created_idx ON payment_events (created_at);

-- Every HTTP attempt, whatever its outcome (append-only).
CREATE TABLE delivery_attempts (
    id               bigserial PRIMARY KEY,
    delivery_id      bigint NOT NULL REFERENCES deliveries (id),
    -- Position in the retry schedule (restarts at 1 after a redrive).
    attempt          integer NOT NULL CHECK (attempt >= 1),
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL CHECK (duration_ms >= 0),
    -- The HTTP status when an answer arrived, else the transport error (timeout, refused, ...).
    http_status      integer,
    error            text,
    -- At most 1 KiB of the response body, for diagnosis.
    response_snippet text CHECK (octet_length(response_snippet) <= 1024),
    worker           text NOT NULL,
    CHECK (http_status IS NOT NULL OR error IS NOT NULL)
);

CREATE INDEX delivery_attempts_delivery_idx ON delivery_attempts (delivery_id, id);

-- Table consumers read confirmed events incrementally by the id of the transaction that confirmed
-- them (see README, "Reading payment_events incrementally"). A sequence or a timestamp alone can
-- skip rows: a transaction that took a smaller value may commit after a reader has passed it.
ALTER TABLE payment_events ADD COLUMN confirmed_txid xid8;
UPDATE payment_events SET confirmed_txid = pg_current_xact_id() WHERE status = 'confirmed';

-- Set by the database for every writer, so no code path can forget it.
CREATE FUNCTION payment_events_confirmed_txid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'confirmed' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'confirmed') THEN
        NEW.confirmed_txid := pg_current_xact_id();
    ELSIF NEW.status <> 'confirmed' THEN
        NEW.confirmed_txid := NULL;
    ELSE
        NEW.confirmed_txid := OLD.confirmed_txid;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER payment_events_confirmed_txid
    BEFORE INSERT OR UPDATE ON payment_events
    FOR EACH ROW EXECUTE FUNCTION payment_events_confirmed_txid();

CREATE INDEX payment_events_confirmed_txid_idx
    ON payment_events (confirmed_txid, event_id) WHERE confirmed_txid IS NOT NULL;
