"""The business policy gate on the envelope path: blocks, consent, windows, templates, limits."""
