-- Foundation: every distinct event once, every valid notification appended.

CREATE TABLE payment_events (
    event_id           text PRIMARY KEY,
    event_type         text NOT NULL,
    api_version        text NOT NULL CHECK (api_version IN ('v3', 'v2')),
    mch_id             text NOT NULL,
    mch_order_no       text NOT NULL,
    pay_order_id       text NOT NULL,
    original_order_id  text,
    amount             bigint NOT NULL CHECK (amount >= 0),
    currency           text NOT NULL,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'confirmed', 'rejected', 'unconfirmed')),
    status_reason      text,
    notification_count integer NOT NULL DEFAULT 1,
    -- IOTPay's own fields, as sent (card number masked).
    iotpay_status      integer NOT NULL,
    pay_type           text,
    refundable         bigint,
    pay_succ_time_raw  text,
    pay_succ_at        timestamptz,
    card_num           text,
    card_type          text,
    expiry_date        text,
    channel            text,
    invoice_num        text,
    auth_num           text,
    trans_num          text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    last_notified_at   timestamptz NOT NULL DEFAULT now(),
    confirmed_at       timestamptz
);

-- Identity (mch_id, pay_order_id, event_type) is enforced by the primary key: event_id is derived
-- from exactly those three values. A second UNIQUE index on them would not be the ON CONFLICT
-- arbiter, so simultaneous first inserts of one event would fail on it instead of becoming
-- counted repeats; this index only serves look-ups.
CREATE INDEX payment_events_identity_idx ON payment_events (mch_id, pay_order_id, event_type);

CREATE INDEX payment_events_status_idx ON payment_events (status, created_at);

-- Append-only log of every notification whose sign verified (repeats included).
CREATE TABLE notifications (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL REFERENCES payment_events (event_id),
    received_at  timestamptz NOT NULL DEFAULT now(),
    remote_addr  text,
    api_version  text NOT NULL CHECK (api_version IN ('v3', 'v2')),
    fields       jsonb NOT NULL
);

CREATE INDEX notifications_event_idx ON notifications (event_id, received_at);
