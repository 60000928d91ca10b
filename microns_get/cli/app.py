"""The `microns-get` command line: thin typer commands over the library.

Owns: argument parsing, and the one place where errors become a single stderr line and a
documented exit code (see `microns_get.errors.ExitCode`). Commands do no work of their own
beyond calling the catalogue, discovery and the engine, and rendering what comes back.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from microns_get import __version__
from microns_get.catalog import load_catalog
from microns_get.cli import render
from microns_get.config import Settings, resolve_settings
from microns_get.errors import ExitCode, MicronsGetError, exit_code_for
from microns_get.plan.discover import Discoverer, RemoteFacts
from microns_get.sources import make_session

app = typer.Typer(
    name="microns-get",
    help="Download and mirror the public MICrONS connectomics data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class CliState:
    config: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)

    def settings(self, **command_flags: Any) -> Settings:
        return resolve_settings({**self.flags, **command_flags}, self.config)


def _state(ctx: typer.Context) -> CliState:
    return ctx.ensure_object(CliState)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"microns-get {__version__}")
        raise typer.Exit()


@app.callback()
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


@app.command("list")
def list_datasets(
    volume: Annotated[str | None, typer.Option(help="minnie65 or minnie35.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="precomputed-image, precomputed-segmentation, table, ...")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every dataset in the catalogue: versions, mirrors, declared size and format."""
    datasets = load_catalog().select(volume=volume, kind=kind)
    if as_json:
        render.print_json([d.to_json() for d in datasets])
    else:
        render.console.print(render.datasets_table(datasets))


@app.command("info")
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
    async with make_session(settings.jobs, settings.timeout) as session:
        discoverer = Discoverer(session, settings)
        return [await discoverer.describe(dataset, p) for p in parts]


@app.command("config")
def show_config(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The resolved settings and where each value came from (flag, env, config file, default)."""
    settings = _state(ctx).settings()
    if as_json:
        render.print_json(render.settings_json(settings))
    else:
        render.console.print(render.settings_table(settings))


from microns_get.cli import fetch_cmds, mirror_cmds  # noqa: E402 - registers after `app` exists

app.command("fetch")(fetch_cmds.fetch)
app.command("plan")(mirror_cmds.plan)  # fetch_cmds.plan plus --queue
app.command("mirrors")(fetch_cmds.mirrors)
app.command("mirror")(mirror_cmds.mirror)
app.command("sync")(mirror_cmds.sync)
app.command("worker")(mirror_cmds.worker)
app.add_typer(mirror_cmds.queue_app, name="queue")

from microns_get.cli import local_cmds  # noqa: E402

app.command("verify")(local_cmds.verify)
app.command("preview")(local_cmds.preview)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"microns-get: error: {message}\n")
    return code


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code (errors already reported on stderr)."""
    try:
        result = app(
            args=list(argv) if argv is not None else None,
            standalone_mode=False,
            prog_name="microns-get",
        )
    except (typer.Exit, click.exceptions.Exit) as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        return _fail("interrupted", ExitCode.INTERRUPTED)
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
    return result if isinstance(result, int) else ExitCode.OK


def main() -> None:
    sys.exit(run())


__all__ = ["app", "main", "run"]
