-- Issue 11 (audit). A "not found" answer rejects an event only once IOTPay has said so for
-- CONFIRM_NOT_FOUND_MIN_AGE_SECS: measured from its first such answer, not from when the event was
-- stored (an old event, after a worker outage or a recheck, was rejected after a few seconds of
-- answers). Cleared, with not_found_checks, by an answer that finds the order and by a recheck.
ALTER TABLE payment_events
    ADD COLUMN first_not_found_at timestamptz;

-- Pending events already counting "not found" answers: when the first came is unknown, so the
-- span starts now. Never earlier than the truth: nothing is rejected sooner than it should be.
UPDATE payment_events
   SET first_not_found_at = now()
 WHERE status = 'pending' AND not_found_checks > 0;
