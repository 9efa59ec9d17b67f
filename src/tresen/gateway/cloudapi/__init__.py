"""The Cloud API surface of the gateway: Graph-shaped routes, payload models, errors."""
