-- The window check asks when a person last wrote: max(created_at) of their inbound messages.
-- Without direction in the index it read every outbound message to them as well, a cost that
-- grew with each send.
DROP INDEX gw_messages_person;
CREATE INDEX gw_messages_inbound ON gw_messages (number_id, person, direction, created_at)
