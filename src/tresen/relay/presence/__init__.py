"""Online state, last seen and typing: live only, never queued."""
