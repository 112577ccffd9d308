-- Every confirmation check of an event, for the operator's timeline (`events show`, the admin
-- API and console): when it started (the claim), when its decision was recorded, what it
-- decided and why. Written by the same statement that records the decision, under its lease,
-- so a check whose lease was lost leaves no row (its decision was not applied either).
CREATE TABLE confirmation_checks (
    id          bigserial PRIMARY KEY,
    event_id    text NOT NULL REFERENCES payment_events (event_id),
    attempt     integer NOT NULL CHECK (attempt >= 1),
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    result      text NOT NULL CHECK (result IN ('confirmed', 'rejected', 'retry', 'unconfirmed')),
    reason      text
);

CREATE INDEX confirmation_checks_event_idx ON confirmation_checks (event_id, id);
