-- One NOTIFY per inserting statement instead of one per inserted row.
--
-- A transaction that has issued NOTIFY takes a database-wide lock at commit and holds it until its
-- commit record is flushed, so notifying transactions commit one after another: a per-row NOTIFY
-- cost every one-event transaction that serialization (measured: 2,122 -> 1,178 tps with pgbench
-- at 64 clients, docs/PERFORMANCE.md) and queued one entry per row of a group-commit batch.
-- Workers only need "something new is pending" (they claim from the table, never from the
-- payload), so one empty-payload notification per statement that inserted at least one row says
-- the same. Postgres folds identical notifications of one transaction into one.
DROP TRIGGER payment_events_pending_notify ON payment_events;
DROP FUNCTION payment_events_notify_pending();

CREATE FUNCTION payment_events_notify_pending() RETURNS trigger AS $$
BEGIN
    -- Fires for every INSERT statement, also one whose rows all hit ON CONFLICT (repeats): those
    -- create no new pending event and need no wake-up.
    IF EXISTS (SELECT 1 FROM inserted_events) THEN
        PERFORM pg_notify('iotpay_events_pending', '');
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER payment_events_pending_notify
    AFTER INSERT ON payment_events
    REFERENCING NEW TABLE AS inserted_events
    FOR EACH STATEMENT EXECUTE FUNCTION payment_events_notify_pending();
