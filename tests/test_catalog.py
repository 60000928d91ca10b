"""The dataset catalogue: complete against the official catalogue, lookups, strict manifests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from microns_get.catalog import (
    KINDS,
    Catalog,
    Dataset,
    load_catalog,
    parse_declared_size,
)
from microns_get.catalog.load import SOURCE_DIR
from microns_get.errors import BadInput, ManifestError, UnknownDataset, UnknownVersion

CATALOGUE = Path(__file__).resolve().parents[2] / "shared/reference/000_fd966fdfbf3573fa.txt"
CLOUDPATHS = Path(__file__).parent / "data" / "catalogue_cloudpaths.txt"
URL = re.compile(r"\S+://\S+")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def catalogue_text() -> str:
    if not CATALOGUE.is_file():
        pytest.skip(f"shared catalogue not found at {CATALOGUE}")
    return CATALOGUE.read_text(encoding="utf-8")


def table_cloudpaths(text: str) -> list[str]:
    """The Cloudpath cell of every row of every "Name ... Cloudpath ..." table."""
    paths: list[str] = []
    in_table = False
    for line in text.splitlines():
        if line.startswith("Name ") and "Cloudpath" in line:
            in_table = True
        elif not line.strip():
            in_table = False
        elif in_table:
            match = URL.search(line)
            assert match, f"table row without a cloudpath: {line!r}"
            paths.append(match.group(0))
    return paths


def column_blocks(text: str) -> list[dict[str, str]]:
    """Each "Column Descriptions:" block of bullets, as name -> text."""
    blocks: list[dict[str, str]] = []
    for block in re.findall(r"Column Descriptions:\n\n((?:  • .*\n)+)", text):
        bullets = [line.removeprefix("  • ").split(": ", 1) for line in block.splitlines()]
        blocks.append({name: " ".join(desc.split()) for name, desc in bullets})
    return blocks


def expected_cloudpaths() -> list[str]:
    return CLOUDPATHS.read_text(encoding="utf-8").split()


# --- completeness against the official catalogue ------------------------------------------------


def test_cloudpath_list_matches_the_shared_catalogue() -> None:
    assert table_cloudpaths(catalogue_text()) == expected_cloudpaths()


def test_cloudpath_list_has_41_distinct_paths() -> None:
    paths = expected_cloudpaths()
    assert len(paths) == len(set(paths)) == 41
    assert "https://zenodo.org/records/5760218" not in paths
    assert not any(
        p.startswith("s3://bossdb-open-data/iarpa_microns/minnie/minnie65/") for p in paths
    )


def test_catalog_lists_exactly_the_catalogue_cloudpaths(catalog: Catalog) -> None:
    assert catalog.all_catalogue_urls() == set(expected_cloudpaths())


def test_every_catalogue_column_block_is_a_dataset_s_columns(catalog: Catalog) -> None:
    all_columns = [dict(d.columns) for d in catalog.datasets]
    blocks = column_blocks(catalogue_text())
    assert len(blocks) == 5
    for block in blocks:
        assert block in all_columns, f"no dataset has the columns {list(block)}"


# --- ids, volumes, versions, parts --------------------------------------------------------------

M65, M35 = "minnie65", "minnie35"
EXPECTED = [
    ("em", M65, {"": [""]}),
    ("em", M35, {"": [""]}),
    ("seg", M65, {"117": [""], "343": [""], "943": [""], "1300": [""]}),
    ("seg", M35, {"0": [""]}),
    ("autoseg", M65, {"": [""]}),
    ("autoseg", M35, {"": [""]}),
    ("ws", M65, {"": [""]}),
    ("ws", M35, {"": [""]}),
    ("clefts", M65, {"": [""]}),
    ("clefts", M35, {"": [""]}),
    ("nuclei", M65, {"": [""]}),
    ("synapses", M65, {"117": [""]}),
    ("synapses", M35, {"": [""]}),
    ("nucleus-detection", M65, {"": [""]}),
    ("nucleus-classification", M65, {"": [""]}),
    ("proofreading-status", M65, {"": [""]}),
    ("coregistration", M65, {"": [""]}),
    (
        "skeletons",
        M65,
        {"661": ["swc", "meshworks", "metadata"], "1300": ["proofread", "dendrite"]},
    ),
    ("graphene", M65, {"public": [""], "production": [""]}),
    ("graphene", M35, {"production": [""]}),
    ("ground-truth", M65, {"": [""]}),
    ("microct", M65, {"": [""]}),
    ("microct", M35, {"": [""]}),
    ("stimulus-movies", None, {"": [""]}),
    ("functional-scans", None, {"": [""]}),
    ("structural-stacks", None, {"": [""]}),
    ("datajoint-db", None, {"": [""]}),
    ("digital-twin", None, {"": [""]}),
    ("digital-twin-csv", None, {"": [""]}),
]


@pytest.mark.parametrize(
    ("dataset_id", "volume", "versions"),
    EXPECTED,
    ids=[f"{i}-{v or 'functional'}" for i, v, _ in EXPECTED],
)
def test_dataset_versions_and_parts(
    catalog: Catalog, dataset_id: str, volume: str | None, versions: dict[str, list[str]]
) -> None:
    dataset = catalog.find(dataset_id, volume)
    assert dataset.id == dataset_id
    assert (volume in dataset.volumes) if volume else dataset.volumes == ()
    assert {v.name: [p.name for p in v.parts] for v in dataset.versions} == versions
    assert dataset.default_version in versions
    assert dataset.title and dataset.description and dataset.format
    assert dataset.kind in KINDS


def test_entries_are_one_per_id_and_volume_set(catalog: Catalog) -> None:
    entries = sorted((d.id, d.volumes) for d in catalog.datasets)
    assert len(entries) == 28 == len(set(entries))
    assert set(catalog.ids()) == {i for i, _, _ in EXPECTED}


def test_seg_minnie65_defaults_to_1300_which_is_only_on_gcs(catalog: Catalog) -> None:
    seg = catalog.find("seg")
    assert seg.volumes == (M65,)
    assert seg.default_version == "1300"
    (mirror,) = seg.version(None).part(None).mirrors
    assert mirror.provider == "gcs"
    assert mirror.url == "gs://iarpa_microns/minnie/minnie65/seg_m1300"


def test_seg_117_prefers_s3_then_gcs(catalog: Catalog) -> None:
    mirrors = catalog.find("seg").version("117").part(None).mirrors
    assert [m.provider for m in mirrors] == ["s3", "gcs"]
    assert mirrors[0].url == "s3://bossdb-open-data/iarpa_microns/minnie/minnie65/seg"
    assert (
        mirrors[1].https_url == "https://storage.googleapis.com/iarpa_microns/minnie/minnie65/seg"
    )


def test_seg_minnie35_gcs_copy_is_in_microns_phase3(catalog: Catalog) -> None:
    mirrors = catalog.find("seg", M35).version("0").part(None).mirrors
    assert [m.url for m in mirrors] == [
        "s3://bossdb-open-data/iarpa_microns/minnie/minnie35/seg",
        "gs://microns_phase3/minnie/minnie35/seg",
    ]


def test_minnie35_autoseg_keeps_the_catalogue_s3_form(catalog: Catalog) -> None:
    (mirror,) = catalog.find("autoseg", M35).mirrors()
    assert mirror.catalogue_url == "s3://bossdb-open-data/iarpa_microns/minnie/minnie35/autoseg"
    assert mirror.url == mirror.catalogue_url
    assert mirror.https_url == (
        "https://bossdb-open-data.s3.amazonaws.com/iarpa_microns/minnie/minnie35/autoseg"
    )


@pytest.mark.parametrize("part", ["swc", "meshworks", "metadata"])
def test_v661_skeletons_use_the_single_minnie_path(catalog: Catalog, part: str) -> None:
    version = catalog.find("skeletons").version("661")
    (mirror,) = version.part(part).mirrors
    folder = {"swc": "skeletons"}.get(part, part)
    assert mirror.catalogue_url == (
        "https://bossdb-open-data.s3.amazonaws.com/iarpa_microns/minnie/minnie/minnie65/"
        f"skeletons/v661/{folder}"
    )
    assert (
        mirror.url == f"s3://bossdb-open-data/iarpa_microns/minnie/minnie65/skeletons/v661/{folder}"
    )
    assert "/minnie/minnie/" not in (mirror.https_url or "")
    assert any("minnie twice" in note for note in version.notes)


def test_skeletons_default_to_1300_gcs_sets(catalog: Catalog) -> None:
    skeletons = catalog.find("skeletons")
    assert skeletons.default_version == "1300"
    proofread = skeletons.version(None).part("proofread")
    assert proofread.is_prefix
    assert proofread.mirrors[0].url == "gs://microns-static-links/skel/swc/proofread"


@pytest.mark.parametrize(("volume", "nearest"), [(M65, "1300"), (M35, "0")])
def test_graphene_points_to_its_nearest_static_seg(
    catalog: Catalog, volume: str, nearest: str
) -> None:
    graphene = catalog.find("graphene", volume)
    assert graphene.kind == "graphene"
    assert graphene.nearest_static == nearest
    assert catalog.find("seg", volume).version(nearest)
    assert graphene.access and "CloudVolume" in graphene.access
    assert all(m.provider == "graphene" and m.https_url is None for m in graphene.mirrors())


def test_graphene_minnie65_defaults_to_the_public_table(catalog: Catalog) -> None:
    graphene = catalog.find("graphene")
    (mirror,) = graphene.version(None).part(None).mirrors
    assert mirror.url.endswith("/minnie65_public")


def test_only_graphene_has_access_and_nearest_static(catalog: Catalog) -> None:
    for dataset in catalog.datasets:
        is_graphene = dataset.kind == "graphene"
        assert (dataset.access is not None) == is_graphene, dataset.id
        assert (dataset.nearest_static is not None) == is_graphene, dataset.id


def test_mirrors_are_in_preference_order(catalog: Catalog) -> None:
    rank = {"s3": 0, "gcs": 1, "https": 2, "graphene": 3}
    for dataset in catalog.datasets:
        for version in dataset.versions:
            for part in version.parts:
                ranks = [rank[m.provider] for m in part.mirrors]
                assert ranks == sorted(ranks), (dataset.id, version.name, part.name)


def test_microct_is_one_entry_on_both_volumes(catalog: Catalog) -> None:
    assert catalog.find("microct", M35) is catalog.find("microct", M65)
    assert catalog.find("microct").volumes == (M65, M35)


def test_ground_truth_is_a_zenodo_https_file(catalog: Catalog) -> None:
    (mirror,) = catalog.find("ground-truth").mirrors()
    assert mirror.provider == "https"
    assert mirror.url == mirror.https_url == "https://zenodo.org/record/5760218/files/minnie.tar.gz"
    assert not catalog.find("ground-truth").version(None).part(None).is_prefix


def test_functional_prefix_url_drops_trailing_slash(catalog: Catalog) -> None:
    (mirror,) = catalog.find("functional-scans").mirrors()
    assert mirror.catalogue_url.endswith("/two_photon_functional_scans/")
    assert mirror.url == (
        "s3://bossdb-open-data/iarpa_microns/minnie/functional_data/two_photon_functional_scans"
    )


@pytest.mark.parametrize(
    ("dataset_id", "volume", "size"),
    [
        ("em", M65, 117_000_000_000_000),
        ("em", M35, 55_000_000_000_000),
        ("nuclei", M65, 26_800_000_000),
        ("proofreading-status", M65, 56_000),
        ("coregistration", M65, 14_000),
        ("stimulus-movies", None, 186_200_000_000),
        ("functional-scans", None, 1_300_000_000_000),
        ("skeletons", M65, None),
        ("graphene", M65, None),
    ],
    ids=lambda v: str(v),
)
def test_declared_sizes(catalog: Catalog, dataset_id: str, volume: str | None, size: int) -> None:
    dataset = catalog.find(dataset_id, volume)
    assert dataset.size_bytes == size
    assert all(p.size_bytes == size for v in dataset.versions for p in v.parts)


def test_table_kinds_are_single_files_except_the_digital_twin_folder(catalog: Catalog) -> None:
    tables = {d.id: d.version(None).part(None).is_prefix for d in catalog.select(kind="table")}
    assert tables.pop("digital-twin-csv") is True
    assert set(tables.values()) == {False}


def test_to_json_has_every_url_form(catalog: Catalog) -> None:
    data = json.loads(json.dumps(catalog.to_json()))
    seg = next(d for d in data if d["id"] == "seg" and d["volumes"] == [M65])
    mirror = seg["versions"][0]["parts"][0]["mirrors"][0]
    assert set(mirror) == {"provider", "url", "catalogue_url", "https_url"}
    assert seg["default_version"] == "1300"
    assert seg["source"].startswith("20-segmentation.yaml:")


def test_default_catalog_is_cached_and_equals_the_source_manifests(catalog: Catalog) -> None:
    assert load_catalog() is catalog
    assert load_catalog(SOURCE_DIR).to_json() == catalog.to_json()


# --- lookups and their errors -------------------------------------------------------------------


def test_find_without_volume_prefers_minnie65(catalog: Catalog) -> None:
    assert catalog.find("em").volumes == (M65,)
    assert catalog.find("em", M35).volumes == (M35,)
    assert catalog.find("stimulus-movies").volumes == ()


def test_find_typo_names_close_matches(catalog: Catalog) -> None:
    with pytest.raises(UnknownDataset, match=r"^unknown dataset 'segg'; did you mean: seg"):
        catalog.find("segg")


def test_find_nonsense_lists_known_ids(catalog: Catalog) -> None:
    with pytest.raises(UnknownDataset, match=r"known: .*nucleus-detection"):
        catalog.find("zzzzzz")


def test_find_on_a_volume_without_the_dataset_names_its_volumes(catalog: Catalog) -> None:
    with pytest.raises(UnknownVersion, match=r"'nuclei' is on minnie65 only, not on minnie35"):
        catalog.find("nuclei", M35)


def test_find_functional_data_on_a_volume(catalog: Catalog) -> None:
    with pytest.raises(UnknownVersion, match=r"functional data \(no volume\)"):
        catalog.find("digital-twin", M65)


def test_unknown_volume_lists_the_volumes(catalog: Catalog) -> None:
    with pytest.raises(
        BadInput, match=r"unknown volume 'minnie99'; valid volumes: minnie65, minnie35"
    ):
        catalog.find("em", "minnie99")


def test_unknown_version_lists_the_versions(catalog: Catalog) -> None:
    with pytest.raises(
        UnknownVersion, match=r"no version '999'; valid versions: 117, 343, 943, 1300"
    ):
        catalog.find("seg").version("999")


def test_version_accepts_a_v_prefix(catalog: Catalog) -> None:
    assert catalog.find("seg").version("v117").name == "117"


def test_unversioned_dataset_rejects_a_version(catalog: Catalog) -> None:
    with pytest.raises(UnknownVersion, match=r"em \(minnie65\) has no versions"):
        catalog.find("em").version("117")


def test_part_must_be_named_when_there_are_several(catalog: Catalog) -> None:
    version = catalog.find("skeletons").version("661")
    with pytest.raises(UnknownVersion, match=r"several parts \(swc, meshworks, metadata\)"):
        version.part(None)
    with pytest.raises(UnknownVersion, match=r"valid parts: swc, meshworks, metadata"):
        version.part("meshes")


def test_select_filters_by_volume_and_kind(catalog: Catalog) -> None:
    minnie35 = catalog.select(volume=M35)
    assert {d.id for d in minnie35} == {
        "em", "seg", "autoseg", "ws", "clefts", "synapses", "graphene", "microct",
    }  # fmt: skip
    images = catalog.select(kind="precomputed-image")
    assert [d.volumes for d in images] == [(M65,), (M35,)]
    assert catalog.select(volume=M65, kind="graphene") == [catalog.find("graphene")]


def test_select_rejects_an_unknown_kind(catalog: Catalog) -> None:
    with pytest.raises(BadInput, match=r"unknown kind 'image'; valid kinds: precomputed-image, "):
        catalog.select(kind="image")


# --- declared sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("117 TB", 117_000_000_000_000),
        ("14KB", 14_000),
        ("56 KB", 56_000),
        ("10.5 MB", 10_500_000),
        ("26.8 GB", 26_800_000_000),
        ("1.3TB", 1_300_000_000_000),
        ("225 GB total", 225_000_000_000),
        ("multiple, 9.8 GB each, 186.2 GB total", 186_200_000_000),
        ("multiple, 66-95 GB each, 1.3TB total", 1_300_000_000_000),
        ("many files", None),
    ],
    ids=lambda v: str(v),
)
def test_parse_declared_size(text: str, size: int | None) -> None:
    assert parse_declared_size(text) == size


@pytest.mark.parametrize("text", ["12 TBB", "12", "about 5 GiB", "9.8 GB each, 2 GB"])
def test_parse_declared_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="a size like"):
        parse_declared_size(text)


# --- manifest validation ------------------------------------------------------------------------

GOOD = """\
datasets:
  - id: demo
    volumes: [minnie65]
    title: Demo
    description: A demo layer.
    kind: precomputed-image
    format: Precomputed Image
    size: 1 GB
    mirrors:
      - catalogue_url: https://storage.googleapis.com/demo-bucket/em
      - catalogue_url: https://bossdb-open-data.s3.amazonaws.com/demo/em
"""

GRAPHENE = """\
datasets:
  - id: graphene
    volumes: [minnie65]
    title: Dynamic
    description: Dynamic segmentation.
    kind: graphene
    format: Graphene Segmentation
    access: CAVEclient
    nearest_static: "7"
    mirrors:
      - catalogue_url: graphene://https://example.org/segmentation/table/demo
"""

VERSIONED = """\
datasets:
  - id: seg
    volumes: [minnie65]
    title: Seg
    description: Segmentation.
    kind: precomputed-segmentation
    format: Precomputed Sharded Compressed Segmentation
    versions:
      - name: "1"
        mirrors:
          - catalogue_url: s3://bucket/seg1
      - name: "2"
        mirrors:
          - catalogue_url: s3://bucket/seg2
"""


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


BROKEN = {
    "missing-field": (
        _edit(GOOD, "    title: Demo\n", ""),
        "demo.yaml:2: dataset is missing field 'title' (a non-empty string)",
    ),
    "wrong-type": (
        _edit(GOOD, "volumes: [minnie65]", "volumes: minnie65"),
        "demo.yaml:3: field 'volumes': expected a list of distinct volumes",
    ),
    "unknown-volume": (
        _edit(GOOD, "volumes: [minnie65]", "volumes: [minnie66]"),
        "demo.yaml:3: field 'volumes': expected a list of distinct volumes from minnie65, minnie35",
    ),
    "unknown-kind": (
        _edit(GOOD, "kind: precomputed-image", "kind: precomputed-seg"),
        "demo.yaml:6: field 'kind': expected one of precomputed-image, precomputed-segmentation,",
    ),
    "unknown-field": (
        _edit(GOOD, "    size: 1 GB\n", "    size: 1 GB\n    colour: red\n"),
        "demo.yaml:9: unknown field 'colour' in dataset (expected one of: id, volumes,",
    ),
    "bad-url-scheme": (
        _edit(GOOD, "https://storage.googleapis.com/demo-bucket/em", "ftp://example.org/em"),
        "demo.yaml:10: field 'catalogue_url': expected a URL of the form https://host/path",
    ),
    "bucket-without-key": (
        _edit(GOOD, "https://storage.googleapis.com/demo-bucket/em", "s3://bucket"),
        "demo.yaml:10: field 'catalogue_url': expected a URL",
    ),
    "bad-size": (
        _edit(GOOD, "size: 1 GB", "size: 12 TBB"),
        "demo.yaml:8: field 'size': expected a size like '117 TB'",
    ),
    "bad-id": (
        _edit(GOOD, "id: demo", "id: Demo_Layer"),
        "demo.yaml:2: field 'id': expected lower-case letters, digits and '-'",
    ),
    "repeated-key": (
        _edit(GOOD, "    title: Demo\n", "    title: Demo\n    title: Again\n"),
        "demo.yaml:5: field 'title' is given twice",
    ),
    "no-mirrors": (
        GOOD.split("    mirrors:")[0],
        "demo.yaml:2: dataset needs exactly one of the fields 'versions' or 'mirrors'",
    ),
    "empty-mirrors": (
        GOOD.split("\n      - catalogue_url")[0] + " []\n",
        "demo.yaml:9: field 'mirrors': expected a non-empty list",
    ),
    "not-yaml": (
        "datasets: [\n  - id: demo\n    title: x\n",
        "demo.yaml:2: not valid YAML: ",  # the rest is the YAML parser's own wording
    ),
    "not-a-mapping": ("- just\n- a list\n", "demo.yaml:1: manifest: expected a mapping of fields"),
    "empty-file": ("", "demo.yaml:1: manifest: expected a mapping of fields (got None)"),
    "version-name-not-a-string": (
        _edit(VERSIONED, 'name: "2"', "name: 2"),
        "demo.yaml:12: field 'name': expected a string (quote numbers",
    ),
    "duplicate-version": (
        _edit(VERSIONED, 'name: "2"', 'name: "1"'),
        "demo.yaml:12: version '1' is given twice in field 'versions'",
    ),
    "default-version-unknown": (
        _edit(VERSIONED, "    versions:\n", '    default_version: "3"\n    versions:\n'),
        "demo.yaml:8: field 'default_version': expected one of 1, 2 (got '3')",
    ),
    "graphene-field-on-other-kind": (
        _edit(GOOD, "    size: 1 GB\n", '    size: 1 GB\n    nearest_static: "1"\n'),
        "demo.yaml:9: field 'nearest_static': expected no such field unless kind is graphene",
    ),
    "graphene-without-access": (
        _edit(GRAPHENE, "    access: CAVEclient\n", ""),
        "demo.yaml:2: dataset is missing field 'access'",
    ),
    "nearest-static-not-a-seg-version": (
        GRAPHENE,
        "demo.yaml:2: field 'nearest_static': expected a version of seg on minnie65 (none) "
        "(got '7')",
    ),
    "same-url-twice": (
        _edit(GOOD, "https://storage.googleapis.com/demo-bucket/em", "s3://demo/x")
        + _edit(GOOD, "https://bossdb-open-data.s3.amazonaws.com/demo/em", "s3://demo/x")
        .removeprefix("datasets:\n")
        .replace("id: demo", "id: other"),
        "demo.yaml:12: catalogue_url 's3://demo/x' is listed twice (also in demo at demo.yaml:2)",
    ),
}


@pytest.mark.parametrize(("text", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_manifest_names_file_line_and_expectation(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "demo.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_catalog(tmp_path)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_duplicate_dataset_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD, encoding="utf-8")
    other_urls = GOOD.replace("/em", "/em2")
    (tmp_path / "b.yaml").write_text(other_urls, encoding="utf-8")
    with pytest.raises(ManifestError, match=r"^b\.yaml:2: duplicate dataset 'demo' on minnie65 "):
        load_catalog(tmp_path)


def test_good_manifest_loads_with_mirrors_sorted(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(GOOD, encoding="utf-8")
    dataset: Dataset = load_catalog(tmp_path).find("demo")
    assert [m.provider for m in dataset.mirrors()] == ["s3", "gcs"]
    assert (dataset.source_file, dataset.line, dataset.size_bytes) == ("demo.yaml", 2, 10**9)
    assert dataset.version(None).part(None).is_prefix  # precomputed layers are prefixes


def test_versioned_manifest_defaults_to_the_highest_number(tmp_path: Path) -> None:
    (tmp_path / "seg.yaml").write_text(VERSIONED, encoding="utf-8")
    assert load_catalog(tmp_path).find("seg").default_version == "2"


def test_directory_without_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest files"):
        load_catalog(tmp_path)
    with pytest.raises(ManifestError, match="manifest directory not found"):
        load_catalog(tmp_path / "missing")
