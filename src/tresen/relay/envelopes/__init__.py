"""Store-and-forward: per-device queues, group commit, delivery windows, receipts, expiry."""
