"""The CLI's atomic writers: nothing left on failure, ordinary file permissions."""

import os
import stat

import pytest

from restore_mlx.errors import write_atomic, write_json_atomic


def test_written_file_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "stats.json", {"a": 1})
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "stats.json").stat().st_mode)
    assert mode == 0o644


def test_failed_write_leaves_nothing(tmp_path):
    def broken(f):
        f.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "out.txt", broken)
    assert list(tmp_path.iterdir()) == []
