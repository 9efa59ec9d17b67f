"""Business accounts: profiles, hours, links and QR, catalog, verification, tools, scoped ids."""
