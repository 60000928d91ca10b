"""Boxes, unit conversion, clipping, the chunk grid and scale selection (precomputed/grid.py)."""

from __future__ import annotations

import pytest

from microns_get.errors import BadInput
from microns_get.precomputed.grid import (
    NM,
    TABLE_RESOLUTION,
    Box,
    Chunk,
    chunk_key,
    chunks_for,
    clip_to_scale,
    convert,
    count_chunks,
    grid_shape,
    parse_resolution,
    scale_bounds,
    select_scales,
    to_scale,
)
from microns_get.precomputed.info import parse_volume_info

# The minnie65 EM geometry of microns-layouts.md §2.1 (8_8_40 from the bossdb witness).
EM_INFO = {
    "type": "image",
    "data_type": "uint8",
    "num_channels": 1,
    "scales": [
        {
            "key": "8_8_40",
            "resolution": [8, 8, 40],
            "size": [212992, 180224, 13088],
            "voxel_offset": [13824, 13824, 14816],
            "chunk_sizes": [[128, 128, 16]],
            "encoding": "raw",
        },
        {
            "key": "16_16_40",
            "resolution": [16.0, 16.0, 40.0],
            "size": [106496, 90112, 13088],
            "voxel_offset": [6912, 6912, 14816],
            "chunk_sizes": [[128, 128, 32]],
            "encoding": "raw",
        },
        {
            "key": "64_64_80",
            "resolution": [64, 64, 80],
            "size": [26624, 22528, 6544],
            "voxel_offset": [1728, 1728, 7408],
            "chunk_sizes": [[64, 64, 64]],
            "encoding": "raw",
        },
    ],
}
# A small scale for grid arithmetic: 20x18x10 voxels at offset 3,5,7 in 8x8x4 chunks.
SMALL_INFO = {
    "type": "segmentation",
    "data_type": "uint64",
    "num_channels": 1,
    "scales": [
        {
            "key": "s0",
            "resolution": [8, 8, 40],
            "size": [20, 18, 10],
            "voxel_offset": [3, 5, 7],
            "chunk_sizes": [[8, 8, 4]],
            "encoding": "raw",
        }
    ],
}
EM = parse_volume_info(EM_INFO)
SMALL = parse_volume_info(SMALL_INFO).scales[0]


# --- Box ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, lo, hi",
    [
        ("0,0,0,1,1,1", (0, 0, 0), (1, 1, 1)),
        (" 10, 20 ,30,40,50,60 ", (10, 20, 30), (40, 50, 60)),
        ("-5,-5,-1,5,5,1", (-5, -5, -1), (5, 5, 1)),
    ],
    ids=["unit", "spaces", "negative"],
)
def test_box_parse(text: str, lo: tuple, hi: tuple) -> None:
    box = Box.parse(text)
    assert (box.lo, box.hi) == (lo, hi)
    assert Box.parse(str(box)) == box


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("1,2,3", "expected 6 integers"),
        ("1,2,3,4,5,6,7", "expected 6 integers"),
        ("", "expected 6 integers"),
        ("a,b,c,d,e,f", "must be an integer"),
        ("0,0,0,1.5,1,1", "must be an integer"),
        ("10,0,0,5,1,1", "inverted along x"),
        ("0,0,5,1,1,5", "empty or inverted along z"),
        ("5,5,5,0,0,0", "along x,y,z"),
    ],
    ids=["too-few", "too-many", "blank", "letters", "float", "inverted-x", "empty-z", "inverted"],
)
def test_box_parse_rejects(text: str, fragment: str) -> None:
    with pytest.raises(BadInput) as err:
        Box.parse(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_box_intersect_shape_json() -> None:
    a, b = Box((0, 0, 0), (10, 10, 10)), Box((5, -5, 8), (20, 5, 9))
    both = a.intersect(b)
    assert both == Box((5, 0, 8), (10, 5, 9))
    assert both.shape == (5, 5, 1)
    assert not both.is_empty()
    assert both.to_json() == {"lo": [5, 0, 8], "hi": [10, 5, 9]}
    apart = a.intersect(Box((20, 0, 0), (30, 10, 10)))
    assert apart.is_empty() and apart.shape[0] == 0


# --- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, res_in, scale_index, expected",
    [
        # A synapse position from a CAVE table (4,4,40) as a one-voxel box.
        (
            Box((175001, 200003, 20000), (175002, 200004, 20001)),
            TABLE_RESOLUTION,
            0,
            Box((87500, 100001, 20000), (87501, 100002, 20001)),
        ),
        (Box((3, 3, 3), (7, 7, 7)), TABLE_RESOLUTION, 0, Box((1, 1, 3), (4, 4, 7))),
        (Box((1000, 1004, 400), (1008, 1009, 440)), NM, 0, Box((125, 125, 10), (126, 127, 11))),
        (Box((-3, 0, 0), (1, 1, 1)), TABLE_RESOLUTION, 0, Box((-2, 0, 0), (1, 1, 1))),
        (
            Box((100, 100, 100), (101, 101, 101)),
            TABLE_RESOLUTION,
            1,
            Box((25, 25, 100), (26, 26, 101)),
        ),
        (Box((0, 0, 10), (64, 64, 11)), TABLE_RESOLUTION, 2, Box((0, 0, 5), (4, 4, 6))),
    ],
    ids=["table-point", "non-aligned", "nm", "negative", "float-resolution", "z-halved"],
)
def test_to_scale(box: Box, res_in: tuple, scale_index: int, expected: Box) -> None:
    assert to_scale(box, EM.scales[scale_index], res_in) == expected


def test_em_bounds_in_table_units_and_nm() -> None:
    """Numbers from microns-layouts.md §2.1: em_bounds_vx (4,4,40) and BOUNDS_NM."""
    scale = EM.scales[0]
    in_table = Box((27648, 27648, 14816), (453632, 388096, 27904))
    in_nm = Box((110592, 110592, 592640), (1814528, 1552384, 1116160))
    assert to_scale(in_table, scale) == scale_bounds(scale)
    assert to_scale(in_nm, scale, NM) == scale_bounds(scale)
    assert convert(scale_bounds(scale), scale.resolution, NM) == in_nm


@pytest.mark.parametrize(
    "text, expected",
    [("nm", NM), ("4,4,40", (4, 4, 40)), ("3.6, 3.6, 45", (3.6, 3.6, 45))],
    ids=["nm", "table", "fractional"],
)
def test_parse_resolution(text: str, expected: tuple) -> None:
    assert parse_resolution(text) == expected


@pytest.mark.parametrize("text", ["4,4", "0,4,40", "x,y,z", "-4,4,40"], ids=str)
def test_parse_resolution_rejects(text: str) -> None:
    with pytest.raises(BadInput, match="three positive numbers"):
        parse_resolution(text)


def test_fractional_resolution_is_exact() -> None:
    # 3.6 / 1.2 is 2.9999999999999996 in floats; the conversion must still give exactly 3.
    assert convert(Box((1, 1, 1), (2, 2, 2)), (3.6, 3.6, 3.6), (1.2, 1.2, 1.2)) == Box(
        (3, 3, 3), (6, 6, 6)
    )


# --- clipping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, expected, clipped",
    [
        (Box((4, 6, 8), (10, 10, 10)), Box((4, 6, 8), (10, 10, 10)), False),
        (Box((0, 0, 0), (100, 100, 100)), Box((3, 5, 7), (23, 23, 17)), True),
        (Box((20, 20, 16), (30, 30, 30)), Box((20, 20, 16), (23, 23, 17)), True),
    ],
    ids=["inside", "covers-all", "upper-edge"],
)
def test_clip_to_scale(box: Box, expected: Box, clipped: bool) -> None:
    assert clip_to_scale(box, SMALL) == (expected, clipped)


@pytest.mark.parametrize(
    "box",
    [Box((23, 5, 7), (30, 10, 10)), Box((0, 0, 0), (3, 5, 7)), Box((-9, 6, 8), (-1, 9, 9))],
    ids=["past-upper", "touching-lower", "negative"],
)
def test_clip_outside_names_bounds(box: Box) -> None:
    with pytest.raises(BadInput, match=r"outside the volume: bounds are 3,5,7,23,23,17 in s0"):
        clip_to_scale(box, SMALL)


def test_clip_outside_in_callers_units() -> None:
    far = to_scale(Box((0, 0, 0), (100, 100, 100)), EM.scales[0])
    with pytest.raises(BadInput) as err:
        clip_to_scale(far, EM.scales[0], TABLE_RESOLUTION)
    assert "27648,27648,14816,453632,388096,27904 in 4,4,40 units" in str(err.value)


# --- chunk grid -------------------------------------------------------------------------------


def test_grid_shape_matches_witness() -> None:
    assert grid_shape(EM.scales[0]) == (1664, 1408, 818)
    assert grid_shape(SMALL) == (3, 3, 3)


@pytest.mark.parametrize(
    "box, grids",
    [
        (Box((3, 5, 7), (11, 13, 11)), [(0, 0, 0)]),
        (
            Box((10, 12, 10), (12, 14, 12)),
            [
                (0, 0, 0),
                (1, 0, 0),
                (0, 1, 0),
                (1, 1, 0),
                (0, 0, 1),
                (1, 0, 1),
                (0, 1, 1),
                (1, 1, 1),
            ],
        ),
        (Box((22, 22, 16), (40, 40, 40)), [(2, 2, 2)]),
        (Box((0, 0, 0), (4, 6, 8)), [(0, 0, 0)]),
        (Box((30, 30, 30), (40, 40, 40)), []),
    ],
    ids=["one-aligned", "non-aligned-corner", "edge-cell", "below-offset", "outside"],
)
def test_chunks_for(box: Box, grids: list) -> None:
    chunks = chunks_for(SMALL, box)
    assert [c.grid for c in chunks] == grids
    assert count_chunks(SMALL, box) == len(grids)


def test_chunk_bounds_clip_at_volume_edge() -> None:
    (edge,) = chunks_for(SMALL, Box((22, 22, 16), (23, 23, 17)))
    assert edge == Chunk((2, 2, 2), (19, 21, 15), (23, 23, 17))
    assert edge.shape == (4, 2, 2)
    assert chunk_key(SMALL, edge) == "s0/19-23_21-23_15-17"


def test_chunks_cover_the_volume_exactly() -> None:
    chunks = chunks_for(SMALL, scale_bounds(SMALL))
    assert len(chunks) == 27
    assert sum(c.shape[0] * c.shape[1] * c.shape[2] for c in chunks) == 20 * 18 * 10
    assert chunk_key(SMALL, chunks[0]) == "s0/3-11_5-13_7-11"


def test_witness_chunk_key() -> None:
    """The bossdb witness chunk (627,523,415) begins at voxel 94080,80768,21456."""
    scale = EM.scales[0]
    (chunk,) = chunks_for(scale, Box((94080, 80768, 21456), (94081, 80769, 21457)))
    assert chunk.grid == (627, 523, 415)
    assert chunk_key(scale, chunk) == "8_8_40/94080-94208_80768-80896_21456-21472"


# --- scale selection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mip, resolution, keys",
    [
        (None, None, ["8_8_40"]),
        (1, None, ["16_16_40"]),
        ("2", None, ["64_64_80"]),
        ("all", None, ["8_8_40", "16_16_40", "64_64_80"]),
        (None, (16, 16, 40), ["16_16_40"]),
        (None, (64.0, 64.0, 80.0), ["64_64_80"]),
    ],
    ids=["default", "mip-int", "mip-text", "all", "resolution", "resolution-float"],
)
def test_select_scales(mip: object, resolution: tuple | None, keys: list) -> None:
    chosen = select_scales(EM, mip=mip, resolution=resolution)
    assert [s.key for _, s in chosen] == keys
    assert all(EM.scales[i] is s for i, s in chosen)


@pytest.mark.parametrize(
    "mip, resolution, fragment",
    [
        (3, None, "no mip 3; available (mip:res): 0:8,8,40 1:16,16,40 2:64,64,80"),
        (-1, None, "no mip -1"),
        ("x", None, "no mip x"),
        (None, (5, 5, 40), "no scale with resolution 5,5,40; available (mip:res): 0:8,8,40"),
        (0, (8, 8, 40), "not both"),
    ],
    ids=["mip-too-big", "mip-negative", "mip-text", "unknown-resolution", "both"],
)
def test_select_scales_rejects(mip: object, resolution: tuple | None, fragment: str) -> None:
    with pytest.raises(BadInput) as err:
        select_scales(EM, mip=mip, resolution=resolution)
    assert fragment in str(err.value)
