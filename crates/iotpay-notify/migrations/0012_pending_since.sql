-- When a row last became pending again: a dead delivery redriven or moved, an unconfirmed event
-- re-checked. NULL means pending since created_at. The backlog history of GET /api/v1/stats
-- counts a row as pending from here, not from its creation, so the time a delivery spent dead or
-- an event unconfirmed is not drawn as backlog.
ALTER TABLE deliveries ADD COLUMN pending_since timestamptz;
ALTER TABLE payment_events ADD COLUMN pending_since timestamptz;

-- Set by the database for every writer (the operator commands, the API, the console, and the
-- hand-written SQL of older READMEs alike), so no code path can forget it. Only the transition
-- back to pending fires it: the ingest and worker updates of a pending row never do.
CREATE FUNCTION iotpay_pending_again() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.pending_since := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER deliveries_pending_again
    BEFORE UPDATE OF status ON deliveries
    FOR EACH ROW WHEN (OLD.status <> 'pending' AND NEW.status = 'pending')
    EXECUTE FUNCTION iotpay_pending_again();

CREATE TRIGGER payment_events_pending_again
    BEFORE UPDATE OF status ON payment_events
    FOR EACH ROW WHEN (OLD.status <> 'pending' AND NEW.status = 'pending')
    EXECUTE FUNCTION iotpay_pending_again();
