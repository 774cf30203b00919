"""The analyzer's kernels compiled ahead of time (toolkit/pcap/aot.py) against the same
kernels just in time (numba): the same results, numba never imported on the ahead-of-time
path, a call the module has no function for falls back, a stale build is not used, and the
key a call is looked up by tells apart every argument type numba does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthetic import bulk_capture
from toolkit.pcap import jit

REPO = Path(__file__).resolve().parents[1]
CAPTURE = REPO / "captures" / "04-loss" / "a.pcapng.gz"


def _samples():
    a = np.arange(12, dtype=np.int64)
    ro = a.copy()
    ro.flags.writeable = False
    yield from (a, a[::2], a.reshape(3, 4), np.asfortranarray(a.reshape(3, 4)),
                a.reshape(3, 4)[:, 1:], ro, np.empty(0, np.int64))
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64,
               np.float32, np.float64, np.bool_):
        yield np.zeros(5, dt)
        yield dt(1)
    unaligned = np.frombuffer(bytearray(17), np.uint8)[1:].view(np.int64)
    assert not unaligned.flags.aligned
    yield from (unaligned, 7, -1, 1 << 63, 2.5, True, None,
                (a, 3), (a, a), (1, (2.0, a[::2])), ())


def test_the_lookup_key_tells_apart_what_numba_typing_does():
    numba = pytest.importorskip("numba")
    seen = {}
    for v in _samples():
        t = numba.typeof(v)
        key = jit.arg_key((v,))
        assert key == (jit.type_key(t),), (v, t)
        seen.setdefault(key, set()).add(t)
    # one numba type per key: a key never stands for two kinds of argument
    assert all(len(types) == 1 for types in seen.values()), seen
    assert len(seen) >= 25


def test_arguments_numba_types_otherwise_are_not_looked_up():
    for v in (np.zeros(3, "<U4"), np.zeros(3, ">i8"), [1, 2], "text", 1 << 64, object()):
        with pytest.raises(TypeError):
            jit.arg_key((v,))


def test_a_build_from_other_sources_or_versions_is_not_used(monkeypatch):
    index = {"file": "_kernels.so", "key_format": 0, "versions": jit.versions(),
             "sources": "0" * 64, "kernels": []}
    monkeypatch.setattr(jit, "INDEX", Path("/nonexistent/index.json"))
    monkeypatch.setattr(jit, "_aot", {})
    monkeypatch.delenv("LABKIT_AOT", raising=False)
    assert jit.aot_table() == {} and "not built" in jit.aot_status()

    class Index:
        def exists(self):
            return True

        def read_text(self):
            return json.dumps(index)

    monkeypatch.setattr(jit, "INDEX", Index())
    monkeypatch.setattr(jit, "_aot", {})
    assert jit.aot_table() == {} and "another version of labkit" in jit.aot_status()
    index["key_format"] = jit.KEY_FORMAT
    monkeypatch.setattr(jit, "_aot", {})
    assert jit.aot_table() == {} and "other sources" in jit.aot_status()
    index["sources"], index["versions"] = jit.source_hash(), {"numpy": "0"}
    monkeypatch.setattr(jit, "_aot", {})
    assert jit.aot_table() == {} and "other versions" in jit.aot_status()
    monkeypatch.setenv("LABKIT_AOT", "0")
    monkeypatch.setattr(jit, "_aot", {})
    assert jit.aot_table() == {} and "LABKIT_AOT=0" in jit.aot_status()


# a child analyzes the capture in every output and reports whether numba was imported
CHILD = """
import io, json, sys, tempfile, os
import toolkit
from toolkit.pcap import jit
a = toolkit.analyze(sys.argv[1])
out = {"summary": a.summary(), "status": jit.aot_status()}
for fmt in ("csv", "json"):
    buf = io.BytesIO()
    a.write_packets(buf, fmt)
    out[fmt] = buf.getvalue().decode()
with tempfile.TemporaryDirectory() as d:
    a.write_packets(os.path.join(d, "p.parquet"), "parquet")
    out["parquet_bytes"] = os.path.getsize(os.path.join(d, "p.parquet")) > 0
out["states"] = str(a.tcp_states)
out["udp"] = str(a.udp_flows)
if len(sys.argv) > 2:
    # labkit analyze --packets exports once, the columns released first: on an IPv4-only
    # capture an address column of one value is broadcast (stride 0)
    for released in (False, True):
        b = toolkit.analyze(sys.argv[2])
        if released:
            b.release_columns_for_export()
            out["broadcast"] = b.capture.cols["src_hi"].strides == (0,)
        for fmt in ("csv", "json"):
            buf = io.BytesIO()
            b.write_packets(buf, fmt)
            out[f"ipv4_{fmt}_{released}"] = buf.getvalue().decode()
        with tempfile.TemporaryDirectory() as d:
            b.write_packets(os.path.join(d, "p.parquet"), "parquet")
out["numba"] = "numba" in sys.modules
print(json.dumps(out, default=str))
"""


def _child(aot: bool, code: str = CHILD, *args: str) -> dict:
    env = dict(os.environ, LABKIT_AOT="1" if aot else "0")
    p = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.splitlines()[-1])


def _built():
    jit._aot.clear()
    status = jit.aot_status()
    jit._aot.clear()
    if "compiled functions" not in status:
        if os.environ.get("CI") or os.geteuid() == 0:
            pytest.fail(f"the ahead-of-time kernels are {status}: `make test` builds them")
        pytest.skip(f"the ahead-of-time kernels are {status}")
    return status


def test_ahead_of_time_gives_the_same_analysis_without_importing_numba(tmp_path):
    _built()
    ipv4 = tmp_path / "ipv4.pcap"
    bulk_capture(ipv4, 3000)                 # TCP and UDP over IPv4, nothing else
    compiled = _child(True, CHILD, str(CAPTURE), str(ipv4))
    jitted = _child(False, CHILD, str(CAPTURE), str(ipv4))
    assert "compiled functions" in compiled["status"]
    assert compiled["numba"] is False, "a kernel call fell back to numba"
    assert jitted["numba"] is True
    assert compiled["broadcast"] is True
    texts = [f"ipv4_{f}_{r}" for f in ("csv", "json") for r in (False, True)]
    for k in ("summary", "csv", "json", "states", "udp", "parquet_bytes", *texts):
        assert compiled[k] == jitted[k], k
    assert compiled["ipv4_csv_True"] == compiled["ipv4_csv_False"]
    assert compiled["ipv4_csv_True"].count("\n") == 3001
    assert compiled["csv"].count("\n") > 1000


FALLBACK = """
import json, sys
import numpy as np
from toolkit.analysis import sequence
keys = np.array([5, 3, 9, 3, 0], np.int32)      # int32: a type the build has no function for
order = sequence._counting_sort(keys, 10)[0]
wide = sequence._counting_sort(keys.astype(np.int64), 10)[0]
print(json.dumps({"order": order.tolist(), "wide": wide.tolist(),
                  "numba": "numba" in sys.modules}))
"""


def test_a_call_the_module_has_no_function_for_runs_just_in_time():
    _built()
    out = _child(True, FALLBACK)
    assert out["numba"] is True
    assert out["order"] == out["wide"] == np.argsort([5, 3, 9, 3, 0], kind="stable").tolist()


# kernels of a module outside the build: a kernel calling an inline helper and another
# kernel, both declared without numba, typed once numba is loaded
LATE = """
import numpy as np
from toolkit.pcap.jit import helper, inline, kernel

@inline
def _sq(x):
    return x * x

@helper
def _plus(x, k):
    return x + k

@kernel
def _total(a, k):
    s = 0
    for i in range(a.shape[0]):
        s += _plus(_sq(a[i]), k)
    return s

@kernel
def total_twice(a, k):
    return 2 * _total(a, k)
"""


def test_functions_of_a_module_outside_the_build_run_just_in_time(tmp_path):
    (tmp_path / "late_kernels.py").write_text(LATE)
    code = ("import json, sys, numpy as np; import late_kernels as m; "
            "print(json.dumps([m.total_twice(np.arange(5), k=1), m._total(np.arange(3), 2), "
            "'numba' in sys.modules]))")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.splitlines()[-1]) == [2 * (30 + 5), 5 + 6, True]


def test_numba_version_comes_from_its_dist_info_folder_else_from_metadata(tmp_path,
                                                                         monkeypatch):
    # the index is checked against numba's version on every command: read from its
    # dist-info folder's name, as importlib.metadata would say, and by metadata where
    # there is no such folder beside the package (that numba is then never imported is
    # the ahead-of-time child's check above)
    from importlib.metadata import version
    assert jit._numba_version() == version("numba")
    fake = tmp_path / "numba" / "__init__.py"
    fake.parent.mkdir()
    fake.touch()
    spec = type("Spec", (), {"origin": str(fake)})()
    monkeypatch.setattr(jit.importlib.util, "find_spec", lambda name: spec)
    assert jit._numba_version() == version("numba")          # no dist-info: metadata's
    (tmp_path / "numba-9.9.9.dist-info").mkdir()
    assert jit._numba_version() == "9.9.9"
