"""The operator: admin tokens, the admin API and the audit log."""
