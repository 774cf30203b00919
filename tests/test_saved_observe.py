"""A saved reference run keeps the [observe] files where run.json says they are
(kernel/<host>.jsonl.gz), so `labkit check` reads the same counters and sockets tables, and
the reconciliation the same host drops, as the run it was saved from."""

from __future__ import annotations

import json

from test_reconcile_host_drops import ONE, write_run
from toolkit.labs import saved
from toolkit.labs.folder import RunFolder


def test_a_saved_run_keeps_its_kernel_observations(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    doc = write_run(run_dir, ONE, {"UdpRcvbufErrors": 33})
    doc.update(lab={"name": "x", "title": "x"}, seed=1, spec={}, params={}, overrides=[],
               files={"ledger": "link.jsonl"})
    (run_dir / "run.json").write_text(json.dumps(doc))
    (run_dir / "lab.toml").write_text("[lab]\ntitle = 'x'\n")
    before = RunFolder(run_dir)
    dest = saved.save(run_dir, tmp_path / "captures" / "x")
    after = RunFolder(dest)
    rel = after.doc["observe"]["files"]["b"]
    assert rel == "kernel/b.jsonl.gz" and (dest / rel).is_file()
    assert after.table("counters").to_dict("records") == \
        before.table("counters").to_dict("records")
    r = after.reconciliation()
    assert r.host_counters["b"]["UdpRcvbufErrors"] == 33
    assert r.unexplained == 0
    assert not any("not checked" in n for n in r.notes)
