"""Tiled images: one image cut into tiles plus a global view (thumbnail), each view a
run of image tokens of its own, marked by special tokens around it.

Architecture independent. The marker tokens' ids are not in the model configs, so an
image's last view is recognised from the prompt itself: in every tiled layout the last
run of the prompt is the last view of an image, and the marker next to it (before it in
idefics3's ``<global-img>``, after it in lfm2's ``<|image_end|>``) marks every other
image's last view too.
"""

from ..core.types import Segment


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
