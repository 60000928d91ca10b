"""The jobs file of `microns-get mirror`: which datasets go where, checked before anything runs.

Owns: the jobs file model (`JobsFile`, `Job`), its validation against the catalogue, and error
messages as one line "FILE:LINE: FIELD: what was expected". Reads YAML through the catalogue's
line-marking reader (`catalog.yamllines`), so every mapping knows its line. Must not touch DEST
or the network: a bad jobs file is refused with nothing written.

```yaml
dest: /data/microns            # relative paths: relative to this file's folder
delete: false                  # defaults for every job; a job may override `delete`
delete_max_fraction: 0.1       # --delete never removes more than this share without --force
bwlimit: "08:00,10M 20:00,off" # or 50M, or off
checksum: false
lock_ttl_hours: 24
jobs:
  - name: stacks               # default: the dataset id
    dataset: structural-stacks
    volume: minnie65           # version, parts, include, exclude: as for `fetch`
    include: ["*.tif"]
  - dataset: em-image
    bbox: 100,100,10,200,200,20 # a cutout (bbox_resolution, mip, resolution as for `fetch`)
    dest: cutouts              # relative to the top-level dest
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microns_get.catalog import Catalog
from microns_get.catalog.yamllines import LineList, LineMap, Problem, parse_yaml
from microns_get.errors import BadInput
from microns_get.fetch import FetchRequest, selected_parts
from microns_get.mirror.bandwidth import Schedule, parse_bwlimit
from microns_get.plan.cutout import CutoutRequest
from microns_get.plan.discover import PRECOMPUTED_KINDS
from microns_get.precomputed.grid import Box

TOP_FIELDS = ("dest", "delete", "delete_max_fraction", "bwlimit", "checksum", "lock_ttl_hours")
JOB_FIELDS = (
    "name dataset volume version parts include exclude bbox bbox_resolution mip resolution "
    "dest delete"
).split()
DEFAULT_DELETE_MAX_FRACTION = 0.1
BW = "a rate such as 50M, off, or a schedule such as '08:00,10M 20:00,off'"


class JobsFileError(BadInput):
    """The jobs file is malformed: the message names the file, the line and the field."""


@dataclass(frozen=True)
class Job:
    """One dataset selection mirrored into one destination."""

    name: str
    dataset: str
    dest: Path
    volume: str | None = None
    version: str | None = None
    parts: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    bbox: str | None = None
    bbox_resolution: str | None = None
    mip: str | None = None
    resolution: str | None = None
    delete: bool | None = None  # None: the file's (or the flag's) default
    line: int = 0

    def fetch_request(self) -> FetchRequest:
        return FetchRequest(
            self.dataset, self.volume, self.version, self.parts, self.include, self.exclude
        )

    def cutout_request(self) -> CutoutRequest:
        from microns_get.precomputed.grid import TABLE_RESOLUTION, parse_resolution

        box_res = parse_resolution(self.bbox_resolution) if self.bbox_resolution else None
        return CutoutRequest(
            dataset=self.dataset,
            bbox=self.bbox or "",
            bbox_resolution=tuple(box_res or TABLE_RESOLUTION),
            volume=self.volume,
            version=self.version,
            mip=self.mip,
            resolution=tuple(parse_resolution(self.resolution)) if self.resolution else None,
        )


@dataclass(frozen=True)
class JobsFile:
    path: Path
    jobs: tuple[Job, ...]
    delete: bool | None = None
    delete_max_fraction: float | None = None
    bwlimit: Schedule | None = None
    bwlimit_given: bool = False
    checksum: bool | None = None
    lock_ttl_hours: float | None = None


def load_jobs(path: Path, catalog: Catalog, dest_flag: str | Path | None = None) -> JobsFile:
    """Read and check `path`; `dest_flag` (`--dest`) replaces the file's top-level `dest`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobsFileError(f"{path}: cannot read the jobs file: {exc}") from None
    try:
        return parse_jobs(text, Path(path), catalog, dest_flag)
    except Problem as problem:
        raise JobsFileError(f"{path}:{problem.line}: {problem.message}") from None


def parse_jobs(
    text: str, path: Path, catalog: Catalog, dest_flag: str | Path | None = None
) -> JobsFile:
    """The checked jobs file; raises `Problem(line, "field: message")`."""
    doc = parse_yaml(text)
    if not isinstance(doc, LineMap):
        raise Problem(getattr(doc, "line", 1), "expected a mapping with a `jobs:` list")
    _no_unknown(doc, (*TOP_FIELDS, "jobs"), "")
    base = _base_dest(doc, path, dest_flag)
    jobs_list = doc.get("jobs")
    if not isinstance(jobs_list, LineList) or not jobs_list:
        raise Problem(_line(doc, "jobs"), "jobs: expected a non-empty list of jobs")
    jobs = tuple(_job(jobs_list, i, base, catalog) for i in range(len(jobs_list)))
    _unique_names(jobs)
    # YAML 1.1 reads a bare `off` as false: that is what the user meant.
    bw_text = "off" if doc.get("bwlimit") is False else _get(doc, "bwlimit", (str, int), BW)
    return JobsFile(
        path=path,
        jobs=jobs,
        delete=_get(doc, "delete", bool, "true or false"),
        delete_max_fraction=_fraction(doc),
        bwlimit=_checked(doc, "bwlimit", parse_bwlimit, bw_text),
        bwlimit_given="bwlimit" in doc,
        checksum=_get(doc, "checksum", bool, "true or false"),
        lock_ttl_hours=_positive(doc, "lock_ttl_hours"),
    )


# -- top level -------------------------------------------------------------------------------


def _base_dest(doc: LineMap, path: Path, dest_flag: str | Path | None) -> Path | None:
    if dest_flag is not None:
        return Path(dest_flag).expanduser().absolute()
    text = _get(doc, "dest", str, "a directory path")
    if text is None:
        return None
    dest = Path(text).expanduser()
    return dest if dest.is_absolute() else (path.parent / dest).absolute()


def _fraction(doc: LineMap) -> float | None:
    value = _get(doc, "delete_max_fraction", (int, float), "a number between 0 and 1")
    if value is not None and not 0 <= value <= 1:
        raise Problem(_line(doc, "delete_max_fraction"), "delete_max_fraction: expected 0..1")
    return value


def _positive(doc: LineMap, key: str) -> float | None:
    value = _get(doc, key, (int, float), "a positive number")
    if value is not None and value <= 0:
        raise Problem(_line(doc, key), f"{key}: expected a positive number")
    return value


# -- one job ---------------------------------------------------------------------------------


def _job(jobs: LineList, index: int, base: Path | None, catalog: Catalog) -> Job:
    entry = jobs[index]
    where = f"jobs[{index}]"
    if not isinstance(entry, LineMap):
        raise Problem(jobs.lines[index], f"{where}: expected a mapping with at least `dataset:`")
    _no_unknown(entry, JOB_FIELDS, f"{where}.")
    dataset = _get(entry, "dataset", str, "a dataset id (see `microns-get list`)", where)
    if not dataset:
        raise Problem(entry.line, f"{where}.dataset: required (a dataset id)")
    job = Job(
        name=_get(entry, "name", str, "text", where) or dataset,
        dataset=dataset,
        dest=_job_dest(entry, base, where),
        volume=_get(entry, "volume", str, "minnie65 or minnie35", where),
        version=_text(entry, "version", where),
        parts=_globs(entry, "parts", where),
        include=_globs(entry, "include", where),
        exclude=_globs(entry, "exclude", where),
        bbox=_get(entry, "bbox", str, "X0,Y0,Z0,X1,Y1,Z1", where),
        bbox_resolution=_text(entry, "bbox_resolution", where),
        mip=_text(entry, "mip", where),
        resolution=_text(entry, "resolution", where),
        delete=_get(entry, "delete", bool, "true or false", where),
        line=entry.line,
    )
    _check_catalogue(job, entry, catalog, where)
    return job


def _job_dest(entry: LineMap, base: Path | None, where: str) -> Path:
    text = _get(entry, "dest", str, "a directory path", where)
    if text is None:
        if base is None:
            raise Problem(entry.line, f"{where}.dest: no destination (give `dest:` or --dest)")
        return base
    dest = Path(text).expanduser()
    if dest.is_absolute():
        return dest
    if base is None:
        raise Problem(_line(entry, "dest"), f"{where}.dest: relative, but no top-level dest")
    return base / dest


def _check_catalogue(job: Job, entry: LineMap, catalog: Catalog, where: str) -> None:
    """The dataset, version, parts and bbox must exist / parse now, not at 3 am."""
    try:
        dataset = catalog.find(job.dataset, job.volume)
    except BadInput as exc:
        raise Problem(_line(entry, "dataset"), f"{where}.dataset: {exc}") from None
    try:
        if job.bbox is not None:
            if dataset.kind not in PRECOMPUTED_KINDS:
                raise BadInput(f"a bbox needs a precomputed layer; {dataset.id} is {dataset.kind}")
            job.cutout_request()
            Box.parse(job.bbox)
            dataset.version(job.version).part(None)
        else:
            selected_parts(dataset, job.fetch_request())
    except BadInput as exc:
        key = next((k for k in ("bbox", "parts", "version") if k in entry), "dataset")
        raise Problem(_line(entry, key), f"{where}.{key}: {exc}") from None


def _unique_names(jobs: tuple[Job, ...]) -> None:
    seen: dict[str, int] = {}
    for index, job in enumerate(jobs):
        if job.name in seen:
            raise Problem(
                job.line,
                f"jobs[{index}].name: {job.name!r} is already the name of jobs[{seen[job.name]}]"
                " (give each job its own `name:`)",
            )
        seen[job.name] = index


# -- field readers ---------------------------------------------------------------------------


def _line(doc: LineMap, key: str) -> int:
    return doc.lines.get(key, doc.line)


def _no_unknown(doc: LineMap, known: tuple[str, ...], where: str) -> None:
    for key in doc:
        if key not in known:
            raise Problem(
                _line(doc, key), f"{where}{key}: unknown field (known: {', '.join(known)})"
            )


def _get(doc: LineMap, key: str, kind: Any, expected: str, where: str = "") -> Any:
    value = doc.get(key)
    if value is None:
        return None
    bad_bool = isinstance(value, bool) and kind is not bool and bool not in _tuple(kind)
    if bad_bool or not isinstance(value, kind):
        label = f"{where}.{key}" if where else key
        raise Problem(_line(doc, key), f"{label}: expected {expected}, got {value!r}")
    return value


def _tuple(kind: Any) -> tuple[Any, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _text(doc: LineMap, key: str, where: str) -> str | None:
    value = _get(doc, key, (str, int, float), "text", where)
    return None if value is None else str(value)


def _globs(doc: LineMap, key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise Problem(_line(doc, key), f"{where}.{key}: expected a list of names or glob patterns")


def _checked(doc: LineMap, key: str, parse: Callable[[Any], Any], value: Any) -> Any:
    try:
        return parse(value)
    except BadInput as exc:
        raise Problem(_line(doc, key), f"{key}: {exc}") from None
