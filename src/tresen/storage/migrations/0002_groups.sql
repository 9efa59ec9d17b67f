-- groups: a description set by admins, and a change counter.
-- ``epoch`` counts the changes announced to the group's devices (one per "group" queue item);
-- a client compares it with the last notice it applied to notice a gap and refetch the group.

ALTER TABLE groups ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE groups ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0
