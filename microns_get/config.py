"""Settings, declared once, resolved as flag > MICRONS_GET_* environment > config file > default.

Owns: the list of settings, how each is parsed, where the config file is looked for, and which
layer each resolved value came from (`microns-get config` prints that). Must not do I/O beyond
reading the one config file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microns_get.errors import ConfigError

ENV_PREFIX = "MICRONS_GET_"
DEFAULT_CONFIG_PATH = Path("~/.config/microns-get/config.yaml")


def parse_size(text: str | int, allow_zero: bool = False) -> int:
    """Parse a byte count such as `64M`, `1.5GiB`, `8388608` (binary multiples, as rclone does)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0 or (text == 0 and not allow_zero):
            raise ConfigError(f"size must be positive: {text!r}")
        return text
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    multipliers = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    factor = 1
    if s and s[-1] in multipliers:
        factor = multipliers[s[-1]]
        s = s[:-1]
    try:
        value = float(s)
    except ValueError:
        raise ConfigError(f"not a size: {text!r} (expected e.g. 64M, 1G, 8388608)") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"size must be positive: {text!r}")
    return int(value * factor)


def parse_byte_cost(text: str | int) -> int:
    return parse_size(text, allow_zero=True)


def parse_positive_int(text: str | int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise ConfigError(f"must be at least 1: {text!r}")
    return value


def parse_positive_float(text: str | float) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"not a number: {text!r}") from None
    if value <= 0:
        raise ConfigError(f"must be positive: {text!r}")
    return value


def parse_endpoint(text: str | None) -> str | None:
    if text is None or str(text).strip() == "":
        return None
    value = str(text).strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint must start with http:// or https://: {text!r}")
    return value


def parse_rewrites(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """`https://zenodo.org=http://127.0.0.1:9000,https://a=http://b` or a YAML mapping."""
    if not text:
        return {}
    if isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        pairs = []
        for item in str(text).split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ConfigError(f"http rewrite must be FROM=TO: {item!r}")
            src, dst = item.split("=", 1)
            pairs.append((src, dst))
    rewrites: dict[str, str] = {}
    for src, dst in pairs:
        src_url = parse_endpoint(str(src))
        dst_url = parse_endpoint(str(dst))
        if src_url is None or dst_url is None:
            raise ConfigError(f"http rewrite must be FROM=TO with two URLs: {src}={dst}")
        rewrites[src_url] = dst_url
    return rewrites


def parse_mirror(text: str) -> str:
    value = str(text).strip()
    if value in ("auto", "s3", "gcs", "https") or value.startswith(("http://", "https://")):
        return value
    raise ConfigError(f"mirror must be auto, s3, gcs, https or a URL: {text!r}")


def parse_direct_io(text: str) -> str:
    value = str(text).strip().lower()
    if value not in ("auto", "off"):
        raise ConfigError(f"direct_io takes auto or off (got {text!r})")
    return value


def parse_path(text: str | None) -> Path | None:
    if text is None or str(text) == "":
        return None
    return Path(os.path.expanduser(str(text)))


@dataclass(frozen=True)
class SettingSpec:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "s3_endpoint",
        parse_endpoint,
        None,
        "S3 endpoint; when set, requests go path-style to {endpoint}/{bucket}/{key}. "
        "Unset: the public AWS host, virtual-hosted style.",
    ),
    SettingSpec(
        "gcs_endpoint",
        parse_endpoint,
        "https://storage.googleapis.com",
        "GCS base URL for the JSON API (/storage/v1/...) and media downloads.",
    ),
    SettingSpec("http_rewrite", parse_rewrites, {}, "FROM=TO[,FROM=TO]: rewrite other hosts."),
    SettingSpec("dest", parse_path, Path("microns-data"), "Where fetched data lands."),
    SettingSpec("state_dir", parse_path, None, "Checkpoint/state dir (default DEST/.microns-get)."),
    SettingSpec("jobs", parse_positive_int, 16, "Concurrent requests per host."),
    SettingSpec("part_size", parse_size, 64 << 20, "Ranged part size for large objects."),
    SettingSpec("mirror", parse_mirror, "auto", "auto, s3, gcs, https or a mirror base URL."),
    SettingSpec(
        "request_cost",
        parse_byte_cost,
        256 << 10,
        "Cutouts: bytes one request is worth; a whole shard is read when cheaper than ranges.",
    ),
    SettingSpec(
        "delete_max_fraction",
        parse_positive_float,
        0.1,
        "mirror/sync --delete: the largest share of a tree one run may delete without --force.",
    ),
    SettingSpec(
        "bwlimit",
        lambda v: None if v in (None, "") else str(v).strip(),
        None,
        'Bandwidth cap: 50M, off, or a schedule "08:00,10M 20:00,off".',
    ),
    SettingSpec(
        "direct_io",
        parse_direct_io,
        "auto",
        "auto: write large objects' parts with O_DIRECT where the file system allows; off: "
        "through the page cache.",
    ),
    SettingSpec("timeout", parse_positive_float, 60.0, "Seconds before a stalled request fails."),
    SettingSpec("retries", parse_positive_int, 8, "Attempts per request before giving up."),
)
SPEC_BY_NAME = {spec.name: spec for spec in SETTINGS}


@dataclass(frozen=True)
class Resolved:
    value: Any
    origin: str  # "flag", "env MICRONS_GET_X", "config PATH", "default"


@dataclass(frozen=True)
class Settings:
    """The resolved settings; `origins` says where each value came from."""

    values: Mapping[str, Resolved]
    config_path: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name].value
        raise AttributeError(name)

    def origin(self, name: str) -> str:
        return self.values[name].origin


def find_config_file(
    explicit: str | Path | None, environ: Mapping[str, str]
) -> tuple[Path | None, bool]:
    """The config file to read, and whether the user named it (then it must exist)."""
    if explicit:
        return Path(os.path.expanduser(str(explicit))), True
    from_env = environ.get(ENV_PREFIX + "CONFIG")
    if from_env:
        return Path(os.path.expanduser(from_env)), True
    default = Path(os.path.expanduser(str(DEFAULT_CONFIG_PATH)))
    return (default, False) if default.exists() else (None, False)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    import yaml  # here, not at the top: most runs have no config file and need no YAML

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting: value at the top level")
    unknown = sorted(set(data) - set(SPEC_BY_NAME))
    if unknown:
        known = ", ".join(SPEC_BY_NAME)
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (known: {known})")
    return data


def _parse(spec: SettingSpec, raw: Any, origin: str) -> Any:
    try:
        return spec.parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{spec.name} from {origin}: {exc}") from None


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting; `flags` holds only the values the user gave on the command line."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    path, required = find_config_file(config_file, environ)
    file_values: dict[str, Any] = {}
    if path is not None and (required or path.exists()):
        file_values = read_config_file(path)
    values: dict[str, Resolved] = {}
    for spec in SETTINGS:
        env_name = ENV_PREFIX + spec.name.upper()
        if spec.name in flags:
            values[spec.name] = Resolved(_parse(spec, flags[spec.name], "flag"), "flag")
        elif env_name in environ:
            origin = f"env {env_name}"
            values[spec.name] = Resolved(_parse(spec, environ[env_name], origin), origin)
        elif spec.name in file_values:
            origin = f"config {path}"
            values[spec.name] = Resolved(_parse(spec, file_values[spec.name], origin), origin)
        else:
            values[spec.name] = Resolved(spec.default, "default")
    return Settings(values=values, config_path=path)
