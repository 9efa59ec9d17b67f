"""Thin I/O edges of the relay: HTTP, WebSocket, authentication, rate limits."""
