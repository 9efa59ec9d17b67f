"""Consent, blocks, reports and chat entry points: what people decide about who may reach them."""
