"""toolkit.wireshark: Wireshark's dissection and verdicts, in a script and in a Jupyter kernel.

Every test that runs tshark also checks that no tshark process of ours is left behind
(children of this process, zombies included), after an exception too.
"""

from __future__ import annotations

import os

import pytest

import toolkit
import toolkit.wireshark as W
from toolkit.analysis import verdicts as V

from conftest import REPO, corpus_file, tshark_or_skip

SAVED_RUN = REPO / "captures" / "04-loss" / "a.pcapng.gz"
# name -> where: a corpus pcapng, a corpus pcap (VLAN-tagged), the saved run (pcapng.gz)
CAPTURES = ["cs_tcp_retransmissions", "sv_syn_retransmit_vlan", "04-loss/a.pcapng.gz"]


def _path(name: str):
    return SAVED_RUN if name == "04-loss/a.pcapng.gz" else corpus_file(name)


def tshark_children(pid: int | None = None) -> list[int]:
    """Processes named tshark whose parent is pid (this process by default), zombies too."""
    pid = pid or os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and comm == "tshark":
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def packets():
    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = toolkit.analyze(path).packets
        return cache[path]
    return get


@pytest.fixture
def no_tshark_left():
    """Fails the test if it leaves a tshark child process behind."""
    before = set(tshark_children())
    yield
    left = set(tshark_children()) - before
    assert not left, f"tshark process(es) left behind: {sorted(left)}"


# ------------------------------------------------------------- in process ----

@pytest.mark.tshark
@pytest.mark.parametrize("name", CAPTURES)
def test_dissect_frames(name, packets, no_tshark_left):
    tshark_or_skip()
    path = _path(name)
    pk = packets(path)
    tcp = pk["frame"][pk["tcp_stream"] >= 0]
    retrans = pk["frame"][pk["retransmission"] == 1]
    assert len(retrans), "the capture should have a retransmission to look at"
    chosen = sorted({1, 3, int(tcp.iloc[0]), int(retrans.iloc[0])})

    frames = W.dissect(path, chosen)

    assert isinstance(frames, list) and [f.number for f in frames] == chosen
    for fr in frames:
        row = pk.iloc[fr.number - 1]
        assert fr.layer_names[:2] == ["frame", "eth"]
        assert fr.length == row["frame_bytes"]
        if row["tcp_stream"] >= 0:
            assert {"eth", "ip", "tcp"} <= set(fr.layer_names)
            seq = fr["tcp"]["tcp.seq_raw"]
            assert int(seq.show) == row["seq_raw"]
            assert int(seq.value, 16) == row["seq_raw"]            # the raw bytes
            assert seq.label == "Sequence Number (raw)"
            assert seq.showname == f"Sequence Number (raw): {row['seq_raw']}"
        else:
            assert "tcp" not in fr
        says = [e for e in fr.expert if e.field == "tcp.analysis.retransmission"]
        if row["retransmission"]:
            assert says and "retransmission" in says[0].message
            assert says[0].layer == "tcp" and says[0].severity == "Note"
            assert says[0].group == "Sequence"
            # the expert item sits where Wireshark nests it
            flags = fr["tcp"]["tcp.analysis.flags"]
            assert "_ws.expert" in [c.name for c in flags.children]
        else:
            assert not says

    fr = frames[[f.number for f in frames].index(int(retrans.iloc[0]))]
    page = frames._repr_html_()
    assert page.count('<details open class="labkit-wireshark"') == len(frames)
    assert "<summary>" in page and "tcp.seq_raw" in page and "Expert Info" in page
    text = str(fr)
    assert "Transmission Control Protocol" in text and "Sequence Number (raw):" in text
    assert "This frame is a (suspected) retransmission" in text
    assert fr.to_dict()["layers"][0]["name"] == "frame"


@pytest.mark.tshark
def test_dissect_one_frame_one_pass(no_tshark_left):
    tshark_or_skip()
    import toolkit
    pk = toolkit.analyze(SAVED_RUN).packets
    syn = int(pk[pk["tcp_flags"] == 2]["frame"].iloc[0])   # where the saved run has it
    (fr,) = W.dissect(SAVED_RUN, syn, two_pass=False)     # tshark is stopped after it
    assert fr.number == syn and fr.get("tcp.flags.syn") == "1"
    assert W.dissect(SAVED_RUN, []) == []


@pytest.mark.tshark
def test_no_tshark_left_after_an_exception_mid_iteration(monkeypatch, no_tshark_left):
    tshark_or_skip()
    real = W._frame
    seen = []

    def fails_on_the_second(packet):
        seen.append(tshark_children())
        if len(seen) == 2:
            raise RuntimeError("boom mid-iteration")
        return real(packet)

    monkeypatch.setattr(W, "_frame", fails_on_the_second)
    with pytest.raises(RuntimeError, match="boom"):
        W.dissect(SAVED_RUN, range(1, 4000), two_pass=False)
    assert seen[1], "tshark should still have been running when the exception came"
    # the fixture checks it is gone now


@pytest.mark.tshark
def test_bad_frames_and_files(no_tshark_left, tmp_path):
    tshark_or_skip()
    with pytest.raises(LookupError, match="no frame 99999"):
        W.dissect(SAVED_RUN, [1, 99999])
    with pytest.raises(ValueError, match="start at 1"):
        W.dissect(SAVED_RUN, 0)
    with pytest.raises(FileNotFoundError):
        W.dissect(tmp_path / "absent.pcap", 1)
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all" * 10)
    with pytest.raises(W.TsharkError, match="tshark failed"):
        W.dissect(junk, 1)


def test_tshark_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(W.shutil, "which", lambda name, *a, **k: None)
    for call in (lambda: W.dissect(SAVED_RUN, 1), lambda: W.cross_check(SAVED_RUN)):
        with pytest.raises(W.TsharkMissing) as e:
            call()
        assert "tshark" in str(e.value) and "apt-get install tshark" in str(e.value)
        assert "make test" in str(e.value)


def test_verdict_mapping_is_the_corpus_tests():
    from test_corpus_wireshark import LIVE_FIELDS, LIVE_FLAGS, SAVED_FLAGS

    assert set(W.VERDICT_FIELDS) == set(SAVED_FLAGS) | set(LIVE_FLAGS) == set(V.VERDICTS)
    assert all(v == f"tcp.analysis.{k}" for k, v in W.VERDICT_FIELDS.items())
    assert set(W.VALUE_FIELDS.values()) <= set(LIVE_FIELDS)


# ------------------------------------------------------------ cross_check ----

@pytest.mark.tshark
@pytest.mark.parametrize("name", ["cs_tcp_retransmissions", "04-loss/a.pcapng.gz"])
def test_cross_check_agrees(name, packets, no_tshark_left):
    tshark_or_skip()
    path = _path(name)
    cc = W.cross_check(path)
    assert cc.ok, str(cc)
    assert len(cc.disagreements) == 0
    assert list(cc.disagreements.columns) == ["frame", "verdict", "wireshark", "labkit"]
    pk = packets(path)
    assert cc.frames_wireshark == cc.frames_labkit == len(pk)
    assert cc.summary.loc["retransmission", "wireshark"] == pk["retransmission"].sum() > 0
    assert list(cc.summary.index) == list(W.VERDICT_FIELDS) + list(W.VALUE_FIELDS)
    assert "agree on every TCP verdict" in str(cc) and "agree" in cc._repr_html_()


@pytest.mark.tshark
def test_cross_check_lists_a_doctored_verdict(monkeypatch, no_tshark_left):
    tshark_or_skip()
    real = W._labkit_packets
    flipped = {}

    def doctored(path):
        pk = real(path).copy()
        i = int(pk.index[pk["retransmission"] == 1][0])
        pk.loc[i, "retransmission"] = 0
        flipped["frame"] = int(pk.loc[i, "frame"])
        return pk

    monkeypatch.setattr(W, "_labkit_packets", doctored)
    cc = W.cross_check(SAVED_RUN)
    assert not cc.ok
    assert cc.disagreements.to_dict("records") == [
        {"frame": flipped["frame"], "verdict": "retransmission", "wireshark": 1, "labkit": 0}]
    assert cc.summary.loc["retransmission", "disagreements"] == 1
    assert cc.summary["disagreements"].sum() == 1
    assert "1 disagreements" in str(cc) and str(flipped["frame"]) in str(cc)
    assert "<table" in cc._repr_html_()


# ------------------------------------------------------ in a Jupyter kernel ----

KERNEL_CELLS = [
    # the condition under which pyshark's synchronous API fails (pyshark #360, #542)
    "import asyncio\nasyncio.get_event_loop().is_running()",
    "import toolkit.wireshark as W",
    "path = {path!r}",
    "fr = W.dissect(path, [1, 2])",
    "fr[0]",
    "cc = W.cross_check(path)",
    "assert cc.ok, cc",
    "cc",
    "import os, sys\n"
    "assert 'nest_asyncio' not in sys.modules and 'pyshark' not in sys.modules\n"
    "kids = [p for p in os.listdir('/proc') if p.isdigit()\n"
    "        and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1] == str(os.getpid())\n"
    "        and open(f'/proc/{p}/comm').read().strip() == 'tshark']\n"
    "print('tshark children:', len(kids))",
]


@pytest.mark.tshark
def test_in_a_running_jupyter_kernel():
    tshark_or_skip()
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import NoSuchKernel

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(path=str(SAVED_RUN)) if "{path" in c else c)
                for c in KERNEL_CELLS]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute()        # raises CellExecutionError, with the traceback, on an error
    except NoSuchKernel as e:
        pytest.skip(f"no python3 Jupyter kernel: {e}")

    outputs = [c.outputs for c in nb.cells]
    errors = [o for out in outputs for o in out if o.output_type == "error"]
    assert not errors, errors
    assert outputs[0][0]["data"]["text/plain"] == "True"     # a loop was running meanwhile
    shown = outputs[KERNEL_CELLS.index("fr[0]")][0]["data"]
    assert "text/html" in shown and "<details" in shown["text/html"]
    assert "<b>Frame 1</b>" in shown["text/html"]
    checked = outputs[KERNEL_CELLS.index("cc")][0]["data"]
    assert "agree on every TCP verdict" in checked["text/html"]
    assert outputs[-1][0]["text"].strip() == "tshark children: 0"
