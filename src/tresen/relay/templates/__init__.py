"""Message templates: created by businesses, reviewed by the operator, paused by quality."""
