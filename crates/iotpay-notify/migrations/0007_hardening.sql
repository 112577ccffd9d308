-- Issue 11. A "not found" answer from IOTPay rejects an event only after several such checks
-- over a minimum age: count them.
ALTER TABLE payment_events
    ADD COLUMN not_found_checks integer NOT NULL DEFAULT 0;

-- Deliveries to an endpoint no longer in FORWARD_URLS can be dropped by an operator
-- (`iotpay-notify deliveries drop`): kept for the record, never sent.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'delivered', 'dead', 'dropped'));
