"""`verify` and `preview`: thin commands over `microns_get.verify.local` and `microns_get.preview`.

Owns: their flags and output (a rich table on a terminal, plain lines otherwise, JSON on
`--json`) and the exit code of a verification (4 when anything failed). Bad paths raise
`BadInput` in the library, which the app turns into one line and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from microns_get.errors import ExitCode

if TYPE_CHECKING:
    from microns_get.verify.local import Report

PathArg = Annotated[
    Path, typer.Argument(metavar="PATH", help="A layer directory, a DEST, or one file.")
]


def verify(
    path: PathArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    checksums: Annotated[
        bool,
        typer.Option("--checksums/--no-checksums", help="Re-hash whole-object files."),
    ] = True,
) -> None:
    """Check fetched data on disk: info schemas, expected chunks present and decoding, shard
    indexes, recorded sizes and checksums. Exit 4 when anything is wrong."""
    from microns_get.cli import render
    from microns_get.verify.local import verify_path

    report = verify_path(path, checksums=checksums)
    if as_json:
        render.print_json(report.to_json())
    elif sys.stdout.isatty():
        print_table(report)
    else:
        print_lines(report)
    if not report.ok:
        raise typer.Exit(ExitCode.VERIFY_FAILED)


def summary(report: Report) -> str:
    checked = ", ".join(f"{label} {n}" for label, n in sorted(report.checked.items()))
    verdict = "ok" if report.ok else f"{report.failures} problem(s)"
    return f"verify {report.root} ({report.what}): {verdict}; checked: {checked or 'nothing'}"


def print_lines(report: Report) -> None:
    for f in report.findings:
        typer.echo(f"{'FAIL' if f.failure else 'note'} {f.kind}: {f.path}: {f.detail}")
    hidden = sum(report.counts.values()) - len(report.findings)
    if hidden:
        typer.echo(f"... and {hidden} more findings (counts: {dict(report.counts)})")
    typer.echo(summary(report))


def print_table(report: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from microns_get.cli import render

    if report.findings:
        table = Table(title=f"findings under {report.root}")
        for name in ("", "kind", "path", "what is wrong"):
            table.add_column(name, overflow="fold")
        for f in report.findings:
            mark = "[red]FAIL[/red]" if f.failure else "[dim]note[/dim]"
            table.add_row(mark, f.kind, escape(f.path), escape(f.detail))
        render.console.print(table)
    checked = Table(title=escape(summary(report).split(";")[0]))
    checked.add_column("checked")
    checked.add_column("count", justify="right")
    for label, n in sorted(report.checked.items()):
        checked.add_row(label, str(n))
    for kind, n in sorted(report.counts.items()):
        checked.add_row(f"findings: {kind}", str(n))
    render.console.print(checked)


def preview(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="A fetched image layer.")],
    z: Annotated[
        int | None, typer.Option("--z", help="Section, in the scale's voxels (default: middle).")
    ] = None,
    scale: Annotated[str | None, typer.Option("--scale", help="Scale key, e.g. 8_8_40.")] = None,
    mip: Annotated[int | None, typer.Option("--mip", help="Scale index.")] = None,
    seg: Annotated[
        Path | None, typer.Option("--seg", help="A fetched segmentation layer to overlay.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("slice.png"),
) -> None:
    """Write a PNG of one z section of a fetched image layer, over the fetched extent,
    optionally with a segmentation's labels in colour."""
    from microns_get.preview import render_preview

    shown = render_preview(path, out, z=z, scale_key=scale, mip=mip, seg_path=seg)
    typer.echo(shown.describe())
