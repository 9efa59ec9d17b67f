-- No query reads gw_outbox_conversation since gw_outbox_waiting (0004) answers the due query's
-- per-conversation check; it only cost a b-tree write on every insert and state change.
DROP INDEX gw_outbox_conversation
