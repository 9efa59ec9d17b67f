"""The gateway's own schema: numbered SQL files, applied by :mod:`tresen.gateway.store`."""
