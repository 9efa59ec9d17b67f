from __future__ import annotations

from pathlib import Path

import pytest

from tresen.config import load
from tresen.errors import InvalidRequest


def test_layers_defaults_file_env_overrides(tmp_path: Path) -> None:
    file = tmp_path / "tresen.toml"
    file.write_text('port = 9000\nhost = "localhost"\nmax_devices = 3\n')
    settings = load(
        file=file,
        environ={"TRESEN_PORT": "9100", "TRESEN_MAX_DEVICES": "4"},
        overrides={"port": 9200, "host": None},
    )
    assert (settings.port, settings.host, settings.max_devices) == (9200, "localhost", 4)
    assert load(environ={}).port == 8600


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="nope"):
        load(environ={}, overrides={"nope": 1})
    with pytest.raises(InvalidRequest, match="port"):
        load(environ={"TRESEN_PORT": "many"})
