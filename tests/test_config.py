"""Settings precedence: flag > MICRONS_GET_* env > config file > default, with origins."""

from __future__ import annotations

from pathlib import Path

import pytest

from microns_get.config import parse_size, resolve_settings
from microns_get.errors import ConfigError


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    settings = resolve_settings({}, None, environ={"HOME": str(tmp_path)})
    assert settings.s3_endpoint is None
    assert settings.gcs_endpoint == "https://storage.googleapis.com"
    assert settings.origin("jobs") == "default"


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected", "origin"),
    [
        pytest.param(
            "http://flag:1",
            "http://env:2",
            "http://file:3",
            "http://flag:1",
            "flag",
            id="flag-wins",
        ),
        pytest.param(
            None, "http://env:2", "http://file:3", "http://env:2", "env", id="env-over-file"
        ),
        pytest.param(
            None, None, "http://file:3", "http://file:3", "config", id="file-over-default"
        ),
    ],
)
def test_precedence(tmp_path, flag, env, file, expected, origin) -> None:
    config = write_config(tmp_path, f"s3_endpoint: {file}\n")
    environ = {"MICRONS_GET_S3_ENDPOINT": env} if env else {}
    settings = resolve_settings({"s3_endpoint": flag}, config, environ=environ)
    assert settings.s3_endpoint == expected
    assert settings.origin("s3_endpoint").startswith(origin)


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = write_config(tmp_path, "jobs: 3\npart_size: 8M\n")
    settings = resolve_settings({}, None, environ={"MICRONS_GET_CONFIG": str(config)})
    assert settings.jobs == 3
    assert settings.part_size == 8 << 20
    assert settings.origin("jobs") == f"config {config}"


def test_default_config_location_is_read(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    home_config = tmp_path / ".config" / "microns-get" / "config.yaml"
    home_config.parent.mkdir(parents=True)
    home_config.write_text("gcs_endpoint: http://127.0.0.1:4443\n")
    settings = resolve_settings({}, None, environ={})
    assert settings.gcs_endpoint == "http://127.0.0.1:4443"


def test_http_rewrite_parsing() -> None:
    env = {"MICRONS_GET_HTTP_REWRITE": "https://zenodo.org=http://127.0.0.1:9,https://a.b=http://c"}
    settings = resolve_settings({}, None, environ=env)
    assert settings.http_rewrite == {
        "https://zenodo.org": "http://127.0.0.1:9",
        "https://a.b": "http://c",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("jobs: [1, 2]\n", "jobs", id="wrong-type"),
        pytest.param("nonsense: 1\n", "unknown setting 'nonsense'", id="unknown-key"),
        pytest.param("s3_endpoint: ftp://x\n", "http:// or https://", id="bad-endpoint"),
        pytest.param("jobs: [\n", "not valid YAML", id="not-yaml"),
        pytest.param("- a\n- b\n", "mapping", id="not-a-mapping"),
        pytest.param("part_size: lots\n", "not a size", id="bad-size"),
        pytest.param("direct_io: maybe\n", "direct_io takes auto or off", id="bad-direct-io"),
    ],
)
def test_bad_config_file_is_one_clear_error(tmp_path, text, message) -> None:
    config = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        resolve_settings({}, config, environ={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        resolve_settings({}, tmp_path / "missing.yaml", environ={})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8388608", 8388608),
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("1.5GiB", 3 << 29),
        ("16MB", 16 << 20),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value
