-- Issue 14, the `iotpay_expected_orders{state}` gauge (store/reconcile.rs, count_by_state): paid
-- orders, nearly all of them, are counted from this index alone (an index-only scan); only the
-- others are looked up against their payment events. Before, every registered order was joined
-- to its events on every idle poll of every replica.
CREATE INDEX expected_orders_state_idx ON expected_orders (state);
