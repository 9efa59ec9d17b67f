-- The window check asks when a person last wrote: max(created_at) of their inbound messages.
-- Without direction in the index it read every outbound message to them as well, a cost that
-- grew with each send.
DROP INDEX gw_messages_person;
CREATE INDEX gw_messages_inbound ON gw_messages (number_id, person, direction, created_at);

-- The outbox's due query asks, for each due event, whether an older event of its
-- conversation waits for a retry: a range on next_at, usually empty, instead of a walk over
-- every pending event of the conversation.
CREATE INDEX gw_outbox_waiting ON gw_outbox (conversation, state, next_at)
