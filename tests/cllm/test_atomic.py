import pytest

from cllm.atomic import atomic_open, write_atomic


def test_write_replaces_whole_file(tmp_path):
    p = tmp_path / "f.json"
    write_atomic(p, "old")
    write_atomic(p, b"new bytes")
    assert p.read_bytes() == b"new bytes"
    assert [x.name for x in tmp_path.iterdir()] == ["f.json"]  # no temporary left behind


def test_error_inside_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "f.txt"
    write_atomic(p, "old")
    with pytest.raises(RuntimeError), atomic_open(p, "w") as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]
