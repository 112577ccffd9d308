-- Issue 14. Orders a merchant registered with this service before sending the customer to pay,
-- so that a payment whose notification never arrives is still found (by querying IOTPay by
-- mchOrderNo) instead of lost. The state `paid` is not stored: it is read from payment_events
-- (a confirmed payment.succeeded for the order), whichever way that event arrived.
CREATE TABLE expected_orders (
    mch_id         text NOT NULL,
    mch_order_no   text NOT NULL,
    api_version    text NOT NULL CHECK (api_version IN ('v3', 'v2', 'v1')),
    amount         bigint NOT NULL CHECK (amount > 0),
    currency       text NOT NULL,
    expires_at     timestamptz NOT NULL,
    state          text NOT NULL DEFAULT 'expected'
                   CHECK (state IN ('expected', 'paid', 'cancelled', 'expired', 'mismatch')),
    event_id       text REFERENCES payment_events (event_id),
    registered_at  timestamptz NOT NULL DEFAULT now(),
    decided_at     timestamptz,
    -- The reconciler's queue, as for confirmations: a lease guards the one query in flight.
    next_check_at  timestamptz NOT NULL,
    checks         integer NOT NULL DEFAULT 0,
    lease_until    timestamptz,
    leased_by      text,
    last_checked_at timestamptz,
    last_error     text,
    PRIMARY KEY (mch_id, mch_order_no)
);

-- The reconciler's scan: due undecided orders only.
CREATE INDEX expected_orders_due_idx ON expected_orders (next_check_at) WHERE state = 'expected';

-- Where an event came from: IOTPay's notification, or a reconciliation query that found a payment
-- whose notification never arrived.
ALTER TABLE payment_events
    ADD COLUMN source text NOT NULL DEFAULT 'notification'
    CHECK (source IN ('notification', 'reconciliation'));

-- Orders look their payment up by merchant order number.
CREATE INDEX payment_events_order_idx ON payment_events (mch_id, mch_order_no);
