-- How an outbound message is priced under per-message pricing (the relay's rules as far as
-- the gateway can see them): regular | free_customer_service
ALTER TABLE gw_messages ADD COLUMN pricing TEXT NOT NULL DEFAULT ''
