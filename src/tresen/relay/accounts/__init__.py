"""Accounts, phone verification, devices, device linking, profiles and contacts."""
