-- IOTPay's general API (v1: WeChat Pay, Alipay, UnionPay): a third api_version, and the wallet's
-- own transaction number (`channelOrderNo`), which a merchant needs to trace a payment with
-- WeChat or Alipay. The payer's `openid` gets no column: it is personal data, kept only in the
-- raw `notifications.fields` log.
ALTER TABLE payment_events DROP CONSTRAINT payment_events_api_version_check;
ALTER TABLE payment_events ADD CONSTRAINT payment_events_api_version_check
    CHECK (api_version IN ('v3', 'v2', 'v1'));
ALTER TABLE payment_events ADD COLUMN channel_order_no text;

ALTER TABLE notifications DROP CONSTRAINT notifications_api_version_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_api_version_check
    CHECK (api_version IN ('v3', 'v2', 'v1'));
