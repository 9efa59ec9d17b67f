"""tresen: open, self-hostable end-to-end encrypted messaging."""

__version__ = "0.1.0"

#: Bumped on every client-visible change of the HTTP API or the WebSocket protocol.
API_FEATURE_LEVEL = 2

__all__ = ["API_FEATURE_LEVEL", "__version__"]
