"""Start-up of the command line: a run imports only what its command needs, and building only
that command changes nothing a user sees. Checked on `sys.modules` in a fresh interpreter, never
on time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer.main

from microns_get.cli.app import COMMANDS, ROOT_VALUE_OPTIONS, build_app, command_name, run

HEAVY = ("numpy", "aiohttp", "rich", "yaml", "microns_get.fetch")


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def heavy(modules: set[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(n for n in names if n in modules)


def test_importing_the_cli_loads_nothing_heavy() -> None:
    # pydantic too: newer typer loads it itself, but only once it parses an option's value
    assert heavy(modules_after("import microns_get.cli.app"), (*HEAVY, "pydantic")) == []


def test_help_and_version_load_nothing_heavy() -> None:
    for argv in (["--version"], ["--help"], ["fetch", "--help"]):
        loaded = modules_after(f"from microns_get.cli.app import run; run({argv!r})")
        assert heavy(loaded) == [], argv


def test_a_cutout_loads_neither_numpy_nor_the_whole_object_engine() -> None:
    # everything `fetch --bbox` imports before it asks a mirror (a raw layer needs no numpy)
    code = "import microns_get.cli.fetch_cmds, microns_get.cutout"
    names = ("numpy", "rich", "microns_get.fetch", "microns_get.transfer.engine")
    assert heavy(modules_after(code), names) == []


@pytest.mark.parametrize("mirror", ["auto", "s3", "gcs"])
def test_a_cutout_run_never_imports_aiohttp(mirror_env, tmp_path, mirror: str) -> None:
    """A whole `fetch em --bbox` against the local mirrors (discovery, shard indexes, chunk
    reads, writes) in a fresh interpreter: its HTTP is the direct transport."""
    box = ["--bbox", "13830,13840,14818,13930,13901,14845", "--bbox-resolution", "8,8,40"]
    argv = ["fetch", "em", *box, "--mirror", mirror, "--dest", str(tmp_path), "--json"]
    loaded = modules_after(f"from microns_get.cli.app import run\nassert run({argv!r}) == 0")
    assert heavy(loaded, ("aiohttp", "microns_get.fetch", "microns_get.transfer.engine")) == []
    assert list(tmp_path.rglob("*-*_*-*_*-*")), "the cutout wrote chunks"


@pytest.mark.parametrize(
    "argv, name",
    [
        ([], None),
        (["--help"], None),
        (["--version"], None),
        (["fetch", "em", "--bbox", "1,2,3,4,5,6"], "fetch"),
        (["--config", "fetch", "list"], "list"),  # `fetch` is the value of --config
        (["--s3-endpoint=http://x", "info", "em"], "info"),
        (["--gcs-endpoint", "http://x", "--http-rewrite", "a=b", "queue", "status"], "queue"),
        (["--", "verify"], "verify"),
        (["nosuch"], "nosuch"),
    ],
    ids=["none", "help", "version", "fetch", "config-value", "equals", "two-values", "dashdash",
         "unknown"],
)  # fmt: skip
def test_command_name(argv: list[str], name: str | None) -> None:
    assert command_name(argv) == name


def test_root_value_options_are_the_root_callbacks() -> None:
    group = typer.main.get_command(build_app([]))
    takes_value = {opt for p in group.params if not getattr(p, "is_flag", False) for opt in p.opts}
    assert takes_value == set(ROOT_VALUE_OPTIONS)


def test_one_command_app_matches_the_whole_cli(capsys) -> None:
    whole = typer.main.get_command(build_app())
    assert set(whole.commands) == set(COMMANDS)
    for name in COMMANDS:
        alone = typer.main.get_command(build_app([name]))
        assert [p.name for p in alone.commands[name].params] == [
            p.name for p in whole.commands[name].params
        ]


def test_help_lists_every_command_and_unknown_commands_fail(capsys) -> None:
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert run(["nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_a_run_does_not_load_pydantic() -> None:
    """typer 0.29 builds pydantic validators for every option of the command at each run
    (~0.2 s of start-up); pyproject pins below it. This fails if an upgrade brings it back."""
    loaded = modules_after("from microns_get.cli.app import run; run(['list', '--json'])")
    assert "pydantic" not in loaded
