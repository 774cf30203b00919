"""A lab's own files ([files], toolkit.labs.files): made in the run folder from the seed,
named {files} in a flow's options, refused with the key named when wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from toolkit.labs import files, spec
from toolkit.labs.flows import endpoints_for

LAB = """
[lab]
title = "t"
seed = 7
[files]
"transfer.bin" = {size = "10K"}
received = {folder = true}
[[flow]]
port = 5201
send = {file = "{files}/transfer.bin"}
serve = {receive_dir = "{files}/received"}
"""


def test_a_file_is_the_same_bytes_for_a_seed_and_other_bytes_for_another():
    a = files.content(7, "transfer.bin", 5000)
    assert len(a) == 5000 and a == files.content(7, "transfer.bin", 5000)
    assert a[:100] == files.content(7, "transfer.bin", 100)         # a prefix, any size
    assert a != files.content(8, "transfer.bin", 5000)
    assert a != files.content(7, "other.bin", 5000)
    # pinned: SHAKE-256 of "labkit file 7 transfer.bin" (FIPS 202), the same on any machine
    assert hashlib.shake_256(b"labkit file 7 transfer.bin").digest(16) == a[:16]


def test_make_writes_the_files_and_folders_under_files(tmp_path):
    made = files.make(files.parse({"transfer.bin": {"size": "10K"},
                                   "received": {"folder": True}}), tmp_path, 7)
    data = (tmp_path / "files" / "transfer.bin").read_bytes()
    assert data == files.content(7, "transfer.bin", 10_240)
    assert (tmp_path / "files" / "received").is_dir()
    assert not any((tmp_path / "files" / "received").iterdir())
    assert made == [{"path": "files/transfer.bin", "bytes": 10_240,
                     "sha256": hashlib.sha256(data).hexdigest()},
                    {"path": "files/received", "folder": True}]


def test_make_never_writes_over_a_file(tmp_path):
    specs = files.parse({"transfer.bin": {"size": 10}})
    files.make(specs, tmp_path, 7)
    with pytest.raises(FileExistsError):
        files.make(specs, tmp_path, 8)


@pytest.mark.parametrize("table,message", [
    ({"../x": {"size": 1}}, r'files\."\.\./x": a plain name'),
    ({".hidden": {"size": 1}}, r"a plain name"),
    ({"a/b": {"size": 1}}, r"a plain name"),
    ({"x": {"size": "lots"}}, r"files\.x\.size: "),
    ({"x": {"size": "1G"}}, r"files\.x\.size: 1073741824 bytes; at most"),
    ({"x": {}}, r"files\.x: expected \{size"),
    ({"x": {"size": 1, "folder": True}}, r"files\.x: expected"),
    ({"x": {"folder": "yes"}}, r"files\.x\.folder: 'yes'; expected true"),
    ({"x": {"bytes": 1}}, r"files\.x: expected"),
    ("transfer.bin", r"files: expected a table"),
])
def test_bad_entries_name_the_key(table, message):
    with pytest.raises(files.FilesError, match=message):
        files.parse(table)


def test_a_lab_keeps_the_placeholder_for_the_runner(tmp_path):
    lab = spec.loads(LAB, tmp_path / "lab.toml")
    assert lab.files == (files.FileSpec("transfer.bin", 10_240), files.FileSpec("received", None))
    assert lab.flows[0].send == {"file": "{files}/transfer.bin"}

    class Lab:
        def addr(self, host):
            return "10.201.2.2"
    run = tmp_path / "run"
    serve, send = endpoints_for(lab.flows[0], Lab(), run)
    where = str((run / "files").resolve())
    assert send.argv[-2:] == ["--file", f"{where}/transfer.bin"]
    assert serve.argv[-2:] == ["--receive-dir", f"{where}/received"]
    assert Path(where).is_absolute()


def test_the_placeholder_needs_a_files_section(tmp_path):
    text = LAB.replace('[files]\n"transfer.bin" = {size = "10K"}\nreceived = {folder = true}\n',
                       "")
    with pytest.raises(spec.LabError, match=r"flow\[0\]\.send: \{files\} names the run's "
                                            r"files folder, and this lab has no \[files\]"):
        spec.loads(text, tmp_path / "lab.toml")


def test_files_is_not_a_parameter_name(tmp_path):
    with pytest.raises(spec.LabError, match=r"params\.files: \{files\} names"):
        spec.loads(LAB + "[params]\nfiles = 1\n", tmp_path / "lab.toml")


def test_a_bad_entry_in_a_lab_is_a_lab_error(tmp_path):
    with pytest.raises(spec.LabError, match=r'lab\.toml: files\."transfer\.bin"\.size'):
        spec.loads(LAB.replace('size = "10K"', 'size = "ten"'), tmp_path / "lab.toml")
