-- What a one-transaction-per-notification receiver does for each notification: the same
-- upsert of payment_events and insert into notifications, in its own transaction.
\set n random(1, 1000000000)
BEGIN;
INSERT INTO payment_events (event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id,
    original_order_id, amount, currency, iotpay_status, pay_type, refundable, pay_succ_time_raw,
    pay_succ_at, card_num, card_type, expiry_date, channel, invoice_num, auth_num, trans_num)
VALUES ('evt_pgbench_' || :n, 'payment.succeeded', 'v3', '10000701', 'bench-' || :n, 'PB' || :n,
    NULL, 1500, 'CAD', 2, 'pay', 1500, '2026-11-22 10:00:00', '2026-11-22T15:00:00Z',
    '432567******2266', NULL, '0729', 'PF_CC', NULL, 'A1', 'T' || :n)
ON CONFLICT (event_id) DO UPDATE
   SET notification_count = payment_events.notification_count + 1,
       last_notified_at = now(), updated_at = now();
INSERT INTO notifications (event_id, remote_addr, api_version, fields)
VALUES ('evt_pgbench_' || :n, '127.0.0.1', 'v3',
    ('{"payOrderId":"PB' || :n || '","mchId":"10000701","mchOrderNo":"bench-' || :n || '","originalOrderId":"","amount":1500,"currency":"CAD","payType":"pay","refundable":1500,"status":2,"paySuccTime":"2026-11-22 10:00:00","cardNum":"432567******2266","expiryDate":"0729","invoiceNum":"","authNum":"A1","transNum":"T1","channel":"PF_CC","sign":"3897C8A7E01FBD6E413C840FA8A48B09"}')::jsonb);
END;
