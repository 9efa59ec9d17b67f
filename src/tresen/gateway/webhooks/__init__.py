"""Webhooks: payload shapes, the signature, the durable outbox and its delivery worker."""
