"""Metering and billing: the rate card, usage, invoices, balances."""
