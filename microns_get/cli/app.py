"""The `microns-get` command line: thin typer commands over the library.

Owns: argument parsing, and the one place where errors become a single stderr line and a
documented exit code (see `microns_get.errors.ExitCode`). Commands do no work of their own
beyond calling the catalogue, discovery and the engine, and rendering what comes back.

Start-up: every run pays for what this module imports, so it imports typer and nothing heavy.
A run builds only the command it was asked for (`_app_for`): the other command modules, and
the libraries behind them (numpy, aiohttp, rich, the catalogue), are never imported.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from microns_get import __version__
from microns_get.errors import ExitCode, MicronsGetError, exit_code_for

if TYPE_CHECKING:
    from microns_get.config import Settings
    from microns_get.plan.discover import RemoteFacts

# name -> (module, attribute), in the order `--help` lists them. A typer sub-app ("queue") is
# registered as a group, the rest as commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": (__name__, "list_datasets"),
    "info": (__name__, "info"),
    "config": (__name__, "show_config"),
    "fetch": ("microns_get.cli.fetch_cmds", "fetch"),
    "plan": ("microns_get.cli.mirror_cmds", "plan"),  # fetch_cmds.plan plus --queue
    "mirrors": ("microns_get.cli.fetch_cmds", "mirrors"),
    "mirror": ("microns_get.cli.mirror_cmds", "mirror"),
    "sync": ("microns_get.cli.mirror_cmds", "sync"),
    "worker": ("microns_get.cli.mirror_cmds", "worker"),
    "queue": ("microns_get.cli.mirror_cmds", "queue_app"),
    "verify": ("microns_get.cli.local_cmds", "verify"),
    "preview": ("microns_get.cli.local_cmds", "preview"),
}
# Options of the root callback that take a value (`--config PATH`): the command name is the
# first argument that is neither one of these, nor their value, nor another option.
ROOT_VALUE_OPTIONS = ("--config", "--s3-endpoint", "--gcs-endpoint", "--http-rewrite")


@dataclass
class CliState:
    config: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)

    def settings(self, **command_flags: Any) -> Settings:
        from microns_get.config import resolve_settings

        return resolve_settings({**self.flags, **command_flags}, self.config)


def _state(ctx: typer.Context) -> CliState:
    return ctx.ensure_object(CliState)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"microns-get {__version__}")
        raise typer.Exit()


def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML config file (else MICRONS_GET_CONFIG, ~/.config/microns-get/config.yaml).",
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3 endpoint (path-style), e.g. a site cache.")
    ] = None,
    gcs_endpoint: Annotated[str | None, typer.Option(help="GCS JSON/media API base URL.")] = None,
    http_rewrite: Annotated[
        str | None, typer.Option(help="FROM=TO[,FROM=TO] host rewrites for plain HTTPS.")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """Download and mirror the public MICrONS connectomics data."""
    state = _state(ctx)
    state.config = config
    state.flags = {
        "s3_endpoint": s3_endpoint,
        "gcs_endpoint": gcs_endpoint,
        "http_rewrite": http_rewrite,
    }


def list_datasets(
    volume: Annotated[str | None, typer.Option(help="minnie65 or minnie35.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="precomputed-image, precomputed-segmentation, table, ...")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every dataset in the catalogue: versions, mirrors, declared size and format."""
    from microns_get.catalog import load_catalog
    from microns_get.cli import render

    datasets = load_catalog().select(volume=volume, kind=kind)
    if as_json:
        render.print_json([d.to_json() for d in datasets])
    else:
        render.console.print(render.datasets_table(datasets))


def info(
    ctx: typer.Context,
    dataset_id: Annotated[str, typer.Argument(metavar="DATASET", help="Dataset id (see list).")],
    volume: Annotated[str | None, typer.Option(help="minnie65 (default) or minnie35.")] = None,
    version: Annotated[str | None, typer.Option(help="Version (default: newest).")] = None,
    part: Annotated[str | None, typer.Option(help="Part of the version (default: all).")] = None,
    mirror: Annotated[str | None, typer.Option(help="auto, s3, gcs, https or a URL.")] = None,
    offline: Annotated[bool, typer.Option(help="Catalogue facts only; ask no mirror.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Catalogue facts plus live facts read from a mirror (remote info, listing, HEAD)."""
    import asyncio

    from microns_get.catalog import load_catalog
    from microns_get.cli import render

    settings = _state(ctx).settings(mirror=mirror)
    dataset = load_catalog().find(dataset_id, volume)
    chosen = dataset.version(version)
    parts = [chosen.part(part)] if part is not None else list(chosen.parts)
    facts: list[RemoteFacts] = []
    if dataset.kind != "graphene" and not offline:
        facts = asyncio.run(_describe(settings, dataset, parts))
    if as_json:
        out = dataset.to_json()
        out["selected_version"] = chosen.name
        out["live"] = {p.name: f.to_json() for p, f in zip(parts, facts, strict=False)}
        render.print_json(out)
        return
    render.console.print(render.dataset_summary(dataset))
    columns = render.columns_table(dataset)
    if columns is not None:
        render.console.print(columns)
    for p, f in zip(parts, facts, strict=False):
        label = f"version {chosen.name or '-'}" + (f", part {p.name}" if p.name else "")
        render.console.rule(label)
        for table in render.facts_tables(f):
            render.console.print(table)


async def _describe(settings: Settings, dataset: Any, parts: Sequence[Any]) -> list[RemoteFacts]:
    from microns_get.plan.discover import Discoverer
    from microns_get.sources import make_session

    async with make_session(settings.jobs, settings.timeout) as session:
        discoverer = Discoverer(session, settings)
        return [await discoverer.describe(dataset, p) for p in parts]


def show_config(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The resolved settings and where each value came from (flag, env, config file, default)."""
    from microns_get.cli import render

    settings = _state(ctx).settings()
    if as_json:
        render.print_json(render.settings_json(settings))
    else:
        render.console.print(render.settings_table(settings))


def build_app(names: Sequence[str] | None = None) -> typer.Typer:
    """The CLI with the named commands (None: all of them), each imported only now."""
    new = typer.Typer(
        name="microns-get",
        help="Download and mirror the public MICrONS connectomics data.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    new.callback()(root)
    for name in COMMANDS if names is None else names:
        module, attribute = COMMANDS[name]
        target = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            new.add_typer(target, name=name)
        else:
            new.command(name)(target)
    return new


def command_name(argv: Sequence[str]) -> str | None:
    """The command an argument list runs (None: none, e.g. `--help` or `--version`)."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return next(args, None)
        if arg in ROOT_VALUE_OPTIONS:
            next(args, None)  # its value
        elif not arg.startswith("-"):
            return arg
    return None


def _app_for(argv: Sequence[str]) -> typer.Typer:
    """Only the command that runs; the whole CLI for help, bad names and no command."""
    name = command_name(argv)
    return build_app([name] if name in COMMANDS else None)


def __getattr__(name: str) -> Any:
    # `app` (the whole CLI, for callers that embed or inspect it) is built on first use.
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"microns-get: error: {message}\n")
    return code


def _interrupted() -> int:
    return _fail(
        "interrupted; what finished is kept: run the same command again to go on",
        ExitCode.INTERRUPTED,
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code (errors already reported on stderr)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        result = _app_for(args)(args=args, standalone_mode=False, prog_name="microns-get")
    except typer.Exit as exc:  # with older typer, click's Exit
        return int(getattr(exc, "exit_code", 0) or 0)
    except (typer.Abort, KeyboardInterrupt):
        return _interrupted()
    except MicronsGetError as exc:
        return _fail(str(exc), exit_code_for(exc))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", ExitCode.SOME_FAILED)
    except Exception as exc:
        # Usage errors from click, or from the copy of click that newer typer vendors: both
        # carry `format_message()`; anything else is a bug and keeps its traceback.
        if not hasattr(exc, "format_message"):
            raise
        return _fail(exc.format_message().replace("\n", " "), ExitCode.BAD_INPUT)
    if result == ExitCode.INTERRUPTED:  # typer turns Ctrl-C into a silent exit code 130
        return _interrupted()
    return result if isinstance(result, int) else ExitCode.OK


def main() -> None:
    try:
        code = run()
    except KeyboardInterrupt:  # Ctrl-C after the command had finished, while reporting
        code = _interrupted()
    sys.exit(code)


__all__ = ["app", "build_app", "main", "run"]  # noqa: F822 - `app` comes from __getattr__
