-- Transactional outbox: one delivery per (confirmed event, forward endpoint), created in the
-- same transaction that confirms the event.
CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    event_id        text NOT NULL REFERENCES payment_events (event_id),
    endpoint        text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT deliveries_event_endpoint UNIQUE (event_id, endpoint)
);

CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE status = 'pending';
