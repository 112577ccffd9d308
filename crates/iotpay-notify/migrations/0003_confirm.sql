-- Confirmation: every pending event is checked against IOTPay's query API by a worker that
-- claims it with a lease (FOR UPDATE SKIP LOCKED), queries outside any transaction, then
-- decides in one transaction guarded by the lease token.
ALTER TABLE payment_events
    ADD COLUMN confirm_attempts  integer NOT NULL DEFAULT 0,
    ADD COLUMN next_check_at     timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN lease_until       timestamptz,
    ADD COLUMN leased_by         text,
    ADD COLUMN last_checked_at   timestamptz,
    ADD COLUMN last_check_error  text,
    ADD COLUMN decided_at        timestamptz;

-- The worker's scan: due pending rows only, so decided history never slows it down.
CREATE INDEX payment_events_due_idx ON payment_events (next_check_at) WHERE status = 'pending';

-- Wake confirmation workers as soon as a new event commits (NOTIFY is delivered at commit).
CREATE FUNCTION payment_events_notify_pending() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('iotpay_events_pending', NEW.event_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER payment_events_pending_notify
    AFTER INSERT ON payment_events
    FOR EACH ROW EXECUTE FUNCTION payment_events_notify_pending();
