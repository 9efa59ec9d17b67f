"""The key directory: signed device keys, one-time keys and fallback keys (Matrix's shapes)."""
