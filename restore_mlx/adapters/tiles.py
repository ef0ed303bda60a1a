"""Tiled images: one image cut into tiles plus a global view (thumbnail), each view a
run of image tokens of its own, marked by special tokens around it.

Architecture independent. The marker tokens' ids are not in the model configs, so an
image's last view is recognised from the prompt itself: in every tiled layout the last
run of the prompt is the last view of an image, and the marker next to it (before it in
idefics3's ``<global-img>``, after it in lfm2's ``<|image_end|>``) marks every other
image's last view too.
"""

from ..core.types import Segment
from .contract import SegmentBox


def last_views(input_ids, runs, side: str) -> list:
    """For each run (``ImageSpan``) of ``input_ids`` [1, T]: whether it is the last
    view of its image, read from the marker token on ``side`` ("before" or "after")
    of the prompt's last run. Without such a marker, only the last run is."""
    ids = input_ids[0].tolist()

    def marker(run):
        at = run.start - 1 if side == "before" else run.start + run.length
        return ids[at] if 0 <= at < len(ids) else None

    end = marker(runs[-1]) if runs else None
    last = [end is not None and marker(run) == end for run in runs]
    if last:
        last[-1] = True
    return last


def view_segments(grids, lengths, runs, last) -> tuple:
    """One Segment per view: its (h, w) ``grids`` entry and token count ``lengths``,
    its image counted from the runs that end an image (``last``, per run).

    Views fill the runs in order (a run holds one or more whole views)."""
    ends, at = [], 0
    for run, is_last in zip(runs, last):
        at += run.length
        if is_last:
            ends.append(at)
    segments, offset, image = [], 0, 0
    for grid, n in zip(grids, lengths):
        segments.append(Segment(offset, n, tuple(grid), image=image))
        offset += n
        if image < len(ends) - 1 and offset >= ends[image]:
            image += 1
    return tuple(segments)


def tile_boxes(segments, rows: int, cols: int) -> tuple:
    """``SegmentBox`` es of one image's views as tiling processors cut them: the
    picture is stretched to rows x cols tiles, so the first rows * cols reducible
    segments (row-major) each cover their cell of it; one more view after them is the
    overview (thumbnail, global image) of the whole picture. A lone view is the
    picture itself."""
    views = [s for s in segments if s.reducible]
    if len(views) == 1:
        return (SegmentBox(views[0]),)
    tiles = rows * cols
    if len(views) not in (tiles, tiles + 1):
        raise ValueError(
            f"{len(views)} views of one image in the prompt, but its processor cuts "
            f"this picture into {rows} x {cols} tiles: was it resized or processed "
            "with other settings?"
        )
    cells = [divmod(i, cols) for i in range(tiles)]
    out = [
        SegmentBox(s, (c / cols, r / rows, (c + 1) / cols, (r + 1) / rows))
        for s, (r, c) in zip(views, cells)
    ]
    return tuple(out + [SegmentBox(s, overview=True) for s in views[tiles:]])


def image_processor(processor):
    """The processor's image processor: what knows how a picture is tiled."""
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        raise ValueError(
            "placing the tiles of an image needs the model's processor (its image "
            "processor decides the tiling); pass the one mlx_vlm.load returned"
        )
    return ip
