"""Groups: members and admins, names, invite links, and the notices that announce each change."""
