"""records: a finished record is never lost, a write is whole or absent, an OS fault reads as one line."""

import errno
import json

import pytest

from vae_utils import records


def test_write_record_refuses_to_lose_a_finished_record(tmp_path):
    path = tmp_path / "r.json"
    records.write_record(path, {"points": [1, 2]}, "a record")
    with pytest.raises(records.RecordExistsError, match="already holds a record that this write would lose"):
        records.write_record(path, {"points": [1]}, "a record", lambda old: records.keeps_points(old["points"], [1]))
    records.write_record(path, {"points": [1, 2, 3]}, "a record",
                         lambda old: records.keeps_points(old["points"], [1, 2, 3]))
    assert json.loads(path.read_text()) == {"points": [1, 2, 3]}


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    records.atomic_write_json(path, {"v": 1})

    def interrupted(f, payload):
        f.write(payload[:3])
        raise KeyboardInterrupt
    monkeypatch.setattr(records, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        records.atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_describe_os_error_names_the_path_and_what_to_do():
    line = records.describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/x/y.pt"))
    assert line == "/x/y.pt: No space left on device (free some space and rerun)"


def test_save_once_keeps_the_same_computation_and_writes_a_new_one(tmp_path):
    path = tmp_path / "checks.json"
    first = records.save_once(path, {"budget": "smoke", "seed": 0, "value": 1}, ("budget", "seed"), "checks", log=lambda *a: None)
    kept = records.save_once(path, {"budget": "smoke", "seed": 0, "value": 2}, ("budget", "seed"), "checks", log=lambda *a: None)
    assert first == kept == json.loads(path.read_text()) and kept["value"] == 1
