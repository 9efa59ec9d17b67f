"""The relay cannot touch keys or plaintext by construction: it never imports the SDK."""

from __future__ import annotations

import ast
from pathlib import Path

import tresen

RELAY = Path(tresen.__file__).parent / "relay"
FORBIDDEN = ("tresen.client", "tresen.gateway", "tresen.app")


def test_relay_imports_no_client_gateway_or_app() -> None:
    offenders = []
    for path in RELAY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(FORBIDDEN)]
    assert offenders == []
    assert len(list(RELAY.rglob("*.py"))) > 20  # the walk really saw the relay


def test_version_and_feature_level_are_exported() -> None:
    assert tresen.__all__ == sorted(tresen.__all__)
    assert tresen.__version__ and tresen.API_FEATURE_LEVEL >= 1
