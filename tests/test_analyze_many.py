"""Many captures at once (`labkit analyze DIR -o OUT --format parquet`, analyze_many): one
dataset per table partitioned by capture, the same rows on one core, on a process pool
and on a Dask cluster; a damaged file reported and skipped; a re-run skips what is done."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, corpus_file
from synthetic import bulk_capture
from toolkit.many import analyze_many, analyze_one, sha256_of

import toolkit

TABLES = ("tcp_conversations", "udp_conversations", "tcp_states", "udp_flows", "packets")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("caps")
    (root / "sub").mkdir()
    for name in ("zeek_ssh_dups", "cs_tcp_retransmissions", "sipp_g711a_rtp"):
        src = corpus_file(name)
        shutil.copy(src, root / "sub" / src.name)
    for i in range(3):
        bulk_capture(root / f"bulk-{i}.pcap", 20_000, seed=i)
    (root / "notes.txt").write_text("not a capture: not looked at")
    return root


def read(out, table) -> pd.DataFrame:
    df = pd.read_parquet(out / table)
    df["capture"] = df["capture"].astype(str)
    keys = [c for c in ("sha256", "stream", "frame", "time") if c in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def same_datasets(one, two) -> None:
    for table in TABLES:
        a, b = read(one, table), read(two, table)
        pd.testing.assert_frame_equal(a, b, check_categorical=False)


def test_a_folder_becomes_one_dataset_per_table_partitioned_by_capture(folder, tmp_path):
    out = tmp_path / "out"
    res = analyze_many([folder], out, jobs=2, packets=True)
    assert res.ok and len(res.done) == 6 and not res.skipped
    files = sorted(str(p) for p in folder.rglob("*.pcap*"))
    tcp = read(out, "tcp_conversations")
    assert sorted(tcp["file"].unique()) == sorted(
        f for f in files if len(toolkit.analyze(f).tcp))
    for f in files:
        a = toolkit.analyze(f)
        digest = sha256_of(f)
        rows = tcp[tcp["file"] == f]
        assert len(rows) == len(a.tcp) and set(rows["sha256"]) <= {digest}
        assert set(rows["capture"]) <= {digest[:16]}
        pk = pd.read_parquet(out / "packets", filters=[("capture", "==", digest[:16])])
        assert len(pk) == len(a) and (pk["file"] == f).all()
        assert pk["retransmission"].sum() == a.packets["retransmission"].sum()
    # DuckDB-style readers see the hive layout too: plain pyarrow datasets
    import pyarrow.dataset as ds
    d = ds.dataset(out / "udp_flows", format="parquet", partitioning="hive")
    assert "capture" in d.schema.names and d.count_rows() == len(read(out, "udp_flows"))


def test_one_process_a_pool_and_the_cli_give_the_same_rows(folder, tmp_path):
    one, pool = tmp_path / "one", tmp_path / "pool"
    assert analyze_many([folder], one, jobs=1, packets=True).ok
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "analyze", str(folder),
                           "--packets", "--format", "parquet", "-o", str(pool), "--jobs",
                           "2"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "[6/6]" in done.stderr and "6 captures analyzed" in done.stderr
    same_datasets(one, pool)


def test_a_damaged_file_is_reported_and_skipped_and_a_rerun_skips_what_is_done(folder,
                                                                              tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    (mixed / "broken.pcap").write_bytes(b"\xd4\xc3\xb2\xa1 short")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "toolkit.cli", "analyze", str(mixed), "--format",
           "parquet", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert "broken.pcap" in done.stderr and "6 captures analyzed" in done.stderr
    line, = [ln for ln in done.stderr.splitlines() if ln.startswith("[") and "broken" in ln]
    assert line.count("broken.pcap") == 1 and ": FAILED: " in line, line   # the path once
    assert len(list((out / "_captures").glob("*.json"))) == 6
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert "0 captures analyzed, 6 done before" in again.stderr
    # a capture added later is the only one analyzed
    bulk_capture(mixed / "late.pcap", 5_000, seed=9)
    res = analyze_many([mixed], out)
    assert [d["file"] for d in res.done] == [str(mixed / "late.pcap")]
    assert len(res.skipped) == 6 and len(res.failed) == 1


def test_bad_input_is_refused_with_the_option_named(tmp_path):
    cap = corpus_file("cs_tcp_retransmissions")
    for args, message in (
            (["--jobs", "2", "--format", "csv"], "--jobs: captures are analyzed in parallel"),
            (["--jobs", "0", "--format", "parquet", "-o", str(tmp_path / "o")], "--jobs 0"),
            ([str(cap), "--stream", "0", "--format", "parquet", "-o", str(tmp_path / "p")],
             "--stream: one capture at a time")):
        done = subprocess.run([sys.executable, "-m", "toolkit.cli", "analyze", str(cap),
                               *args], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "analyze", str(empty),
                           "--format", "parquet", "-o", str(tmp_path / "x")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "no capture files in" in done.stderr


def test_a_dask_cluster_gives_the_same_rows(folder, tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask.distributed is the "
                                      "optional cluster extra (pip install '.[cluster]')")
    local = tmp_path / "local"
    assert analyze_many([folder], local, jobs=1, packets=True).ok
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        res = analyze_many([folder], tmp_path / "dask", client=client, packets=True)
        workers = {w for w in client.run(lambda: __import__("os").getpid()).values()}
    assert res.ok and len(res.done) == 6 and len(workers) == 2
    same_datasets(local, tmp_path / "dask")
    import dask.dataframe as dd
    assert len(dd.read_parquet(tmp_path / "dask" / "packets")) == \
        len(pd.read_parquet(local / "packets"))


def test_review_cases_mixed_schemas_a_packets_rerun_and_the_same_bytes_twice(tmp_path):
    """A capture with lab flows beside one without (one schema for udp_flows); a re-run
    that asks for --packets after one that did not; the same bytes under two names."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(REPO / "captures" / "04-loss" / "b.pcapng.gz", src / "lab.pcapng.gz")
    shutil.copy(corpus_file("cs_tcp_retransmissions"), src / "plain.pcapng")
    shutil.copy(src / "plain.pcapng", src / "plain-again.pcapng")
    out = tmp_path / "out"
    res = analyze_many([src], out, jobs=2)
    # the copy is skipped: as a duplicate while the other is at work, else as done before
    assert len(res.done) == 2 and len(res.skipped) == 1
    assert len({d["sha256"] for d in res.done + res.skipped}) == 2
    flows = pd.read_parquet(out / "udp_flows")
    assert len(flows) > 0 and set(flows["file"]) == {str(src / "lab.pcapng.gz")}
    assert not (out / "packets").exists()
    again = analyze_many([src], out, jobs=2, packets=True)
    assert len(again.done) == 2, again          # done before, but without the packets
    pk = pd.read_parquet(out / "packets", columns=["file"])
    assert str(src / "lab.pcapng.gz") in set(pk["file"]) and pk["file"].nunique() == 2
    assert len(pk) == len(toolkit.analyze(src / "lab.pcapng.gz")) + \
        len(toolkit.analyze(src / "plain.pcapng"))
    assert not list((out / "_captures").glob("*.claim"))


def test_a_capture_read_up_to_damage_is_written_and_the_exit_status_says_so(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    whole = corpus_file("zeek_ssh_dups").read_bytes()
    (src / "cut.pcap").write_bytes(whole[:len(whole) - 100])
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "analyze", str(src),
                           "--format", "parquet", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert "1 read up to damage" in done.stderr and "cut.pcap" in done.stderr
    said, = [line for line in done.stderr.splitlines() if line.startswith("labkit: ")]
    assert said.count(str(src / "cut.pcap")) == 1, said       # the path once, not twice
    line, = [ln for ln in done.stderr.splitlines() if ln.startswith("[1/1] ")]
    assert line.count("cut.pcap") == 1 and "(damaged: " in line, line
    assert len(pd.read_parquet(tmp_path / "out" / "tcp_conversations")) == 1


def test_an_error_names_the_file_as_given_where_a_worker_read_it_elsewhere(tmp_path):
    """A Dask worker reads a relative path from its own directory (`source`): the error
    still names the file as the user gave it, once."""
    (tmp_path / "junk.pcap").write_bytes(b"hello, not a capture")
    doc = analyze_one("in/junk.pcap", str(tmp_path / "out"), source=str(tmp_path / "junk.pcap"))
    assert doc["error"].startswith("in/junk.pcap: at byte 0: not a pcap"), doc
    assert str(tmp_path) not in doc["error"]
