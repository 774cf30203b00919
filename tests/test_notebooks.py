"""The notebooks: stored without outputs, one per lab, and each runs top to bottom in a real
Jupyter kernel (nbclient) on the saved runs; the loss notebook live too where this machine
can run the lab. The questions' checks accept the right answer and reject a wrong one."""

from __future__ import annotations

import json
import os

import pytest

from conftest import REPO, network_or_skip

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
LABS = sorted(p.parent.name for p in (REPO / "labs").glob("*/lab.toml"))
CELL_TIMEOUT_S = 180


def test_every_lab_has_a_notebook_and_there_are_inspect_and_compare():
    names = {p.stem for p in NOTEBOOKS}
    assert set(LABS) <= names
    assert {"inspect-capture", "compare-runs"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_kept_without_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}: cell {i} has stored output"
            assert cell.get("execution_count") is None, f"{path.name}: cell {i} was run"


def execute(path, source: str, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    old = os.environ.get("LABKIT_SOURCE")
    os.environ["LABKIT_SOURCE"] = source          # the kernel inherits it
    try:
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        if old is None:
            os.environ.pop("LABKIT_SOURCE", None)
        else:
            os.environ["LABKIT_SOURCE"] = old
    return nb


def outputs_text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
            for value in (o.get("data") or {}).values():
                if isinstance(value, str):
                    out.append(value)
    return "\n".join(out)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_runs_top_to_bottom_on_the_saved_runs(path, tmp_path):
    nb = execute(path, "saved", tmp_path)      # nbclient raises on the first failing cell
    text = outputs_text(nb)
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert o.get("output_type") != "error", o
    if path.stem in LABS:
        assert "Using the saved run" in text
        assert any("image/png" in (o.get("data") or {}) for c in nb.cells
                   for o in c.get("outputs", [])), "the lab notebook draws its figures"
        assert "no answer yet" in text            # the question cells, unanswered


@pytest.mark.root
def test_the_loss_notebook_runs_live_where_the_machine_can(tmp_path):
    network_or_skip()
    nb = execute(REPO / "notebooks" / "04-loss.ipynb", "live", tmp_path)
    text = outputs_text(nb)
    assert "Running 04-loss live" in text and "Live run done" in text
    assert list((tmp_path / "runs").glob("04-loss-*/run.json"))


# ---- the questions: right answers accepted, wrong ones rejected with the frames ----

def _right_answers(run) -> dict:
    """Each question's answer worked out here without the expectation language: from the
    analyzer's DataFrames, the endpoint reports and the ledger."""
    import toolkit
    name = run.doc["lab"]["name"]
    out = {}
    if name == "01-handshake":
        a = toolkit.analyze(run.capture_file("a"))
        pk = a.packets
        out["syn-isn"] = int(pk[pk["tcp_flags"] == 2]["seq_raw"].iloc[0])
        out["client-mss"] = int(a.tcp["mss_a"].iloc[0])
        out["handshake-rtt-ms"] = round(float(a.tcp["handshake_rtt_s"].iloc[0]) + 0.0004, 4)
        out["time-wait-endpoint"] = "A"
        out["udp-datagrams"] = int(((pk["proto"] == "UDP") & (pk["dport"] == 5202)).sum())
    elif name == "03-boundaries":
        serve = run.endpoint_report("udp", "serve")
        out["udp-recvs"] = serve["connections"][0]["packets"]
        unframed = run.endpoint_report("tcp-unframed", "serve")
        out["unframed-reads"] = unframed["connections"][0]["alignment"]["reads"]
        pk = toolkit.analyze(run.capture_file("a")).packets
        for qid, port in (("nagle-on-segments", 5204), ("nagle-off-segments", 5205)):
            out[qid] = int(((pk["proto"] == "TCP") & (pk["dport"] == port)).sum())
    elif name == "04-loss":
        serve = run.endpoint_report("udp", "serve")
        out["udp-lost"] = serve["connections"][0]["lost"]
        led = run.ledger()
        drops = led.dropped("a_to_b")
        out["udp-lost-on-link"] = sum(1 for r in drops if r["pkt"]["proto"] == "udp"
                                      and r["pkt"].get("flow") is not None)
        out["tcp-segments-dropped"] = sum(1 for r in drops if r["pkt"]["proto"] == "tcp"
                                          and r["pkt"]["len"] > 0)
        pk = toolkit.analyze(run.capture_file("a")).packets
        out["wireshark-retransmissions"] = int(((pk["dport"] == 5201)
                                                & (pk["retransmission"] == 1)).sum())
        out["tcp-delivered"] = run.endpoint_report("tcp", "serve")["connections"][0][
            "messages"]["payload_bytes"]
    elif name == "02-states":
        import gzip
        out["time-wait-endpoint"] = "B"           # the server of 5201 sent the first FIN
        with gzip.open(run.path / "kernel" / "b.jsonl.gz", "rt") as f:
            samples = [json.loads(line).get("sockets") or [] for line in f]
        tw = [s["timer_s"] for ss in samples for s in ss
              if s["state"] == "TIME-WAIT" and s["local_port"] == 5201]
        out["time-wait-left-s"] = tw[0]
        out["close-wait-samples"] = sum(1 for ss in samples for s in ss
                                        if s["state"] == "CLOSE-WAIT" and s["local_port"] == 5202)
        events = run.endpoint_report("server-first", "serve")["events"]
        out["rebind-error"] = next(e["errno"] for e in events if e["event"] == "bind failed")
        pb = toolkit.analyze(run.capture_file("b")).packets
        out["first-fin-frame"] = int(pb[(pb["sport"] == 5201) & (pb["tcp_flags"] & 1 > 0)]
                                     ["frame"].iloc[0])
        pa = toolkit.analyze(run.capture_file("a")).packets
        syn = pa[(pa["dport"] == 5201) & (pa["tcp_flags"] == 2)]["time_s"].iloc[0]
        synack = pa[(pa["sport"] == 5201) & (pa["tcp_flags"] == 0x12)]["time_s"].iloc[0]
        out["syn-sent-ms"] = round(float(synack - syn) + 0.0004, 4)
    elif name == "10-abrupt-close":
        def events(flow):
            return run.endpoint_report(flow, "serve")["events"]
        out["rst-exception"] = next(e["error"] for e in events("rst") if e["event"] == "error")
        pb = toolkit.analyze(run.capture_file("b")).packets
        out["keepalive-probes"] = int(((pb["sport"] == 5203) & (pb["keep_alive"] == 1)).sum())
        ev = {e["event"]: e["t_s"] for e in events("vanish-keepalive")}
        out["keepalive-detected-s"] = round(ev["error"] - ev["accepted"] + 0.05, 2)
        out["write-retransmissions"] = int(((pb["sport"] == 5205)
                                            & (pb["retransmission"] == 1)).sum())
        out["epipe-writes-ok"] = sum(1 for e in events("epipe") if e["event"] == "send ok")
        led = run.ledger()
        out["link-drops-5205"] = sum(1 for d in ("a_to_b", "b_to_a") for r in led.dropped(d)
                                     if 5205 in (r["pkt"]["sport"], r["pkt"]["dport"]))
    elif name == "08-flow-control":
        import gzip
        pb = toolkit.analyze(run.capture_file("b")).packets
        # b's window closed: from each zero window it sent to the next open one (RFC 9293)
        closed, since = 0.0, None
        for _, f in pb[pb["sport"] == 5201].iterrows():
            if f["tcp_flags"] & 7:                     # SYN, FIN, RST: not a window advert
                continue
            if f["window"] == 0 and since is None:
                since = f["time_s"]
            elif f["window"] > 0 and since is not None:
                closed, since = closed + f["time_s"] - since, None
        out["zero-window-time"] = round(closed, 3)
        pa = toolkit.analyze(run.capture_file("a")).packets
        out["window-probes"] = int(((pa["sport"] == 41000) & (pa["keep_alive"] == 1)).sum())
        out["zero-window-adverts"] = int(((pb["sport"] == 5201) & (pb["window"] == 0)
                                          & (pb["tcp_flags"] & 7 == 0)).sum())
        seen = int(toolkit.analyze(run.capture_file("b")).udp_flows.query(
            "dst_port == 5202")["received"].sum())
        got = run.endpoint_report("udp", "serve")["connections"][0]["packets"]
        out["udp-seen-at-b"], out["udp-delivered"] = seen, got
        out["udp-lost-in-host"] = seen - got
        with gzip.open(run.path / "kernel" / "b.jsonl.gz", "rt") as fh:
            recs = [json.loads(line) for line in fh][1:]
        errors = [r["counters"]["UdpRcvbufErrors"] for r in recs
                  if "UdpRcvbufErrors" in (r.get("counters") or {})]
        out["udp-rcvbuf-errors"] = errors[-1] - errors[0]
        out["udp-recv-q-max"] = max(s["recv_q"] for r in recs for s in r["sockets"] or []
                                    if s["proto"] == "udp" and s["local_port"] == 5202)
    elif name == "09-bottleneck":
        pa = toolkit.analyze(run.capture_file("a")).packets
        rtt = pa[(pa["sport"] == 5201)]["ack_rtt_s"].dropna()
        out["rtt-empty"], out["rtt-full"] = float(rtt.min()), float(rtt.max())
        led = run.ledger()
        drops = [r for d in ("a_to_b", "b_to_a") for r in led.dropped(d)]
        out["queue-drops"] = sum(1 for r in drops if r["why"] == "queue")
        udp = run.endpoint_report("udp", "serve")["connections"][0]
        out["udp-dropped"] = udp["lost"]
        out["udp-delivered"] = udp["packets"]
        info = run.endpoint_report("cubic", "send")["end"]["tcp_info"]
        out["cubic-ssthresh"] = info["snd_ssthresh"]
        out["bbr-delivered"] = run.endpoint_report("bbr", "serve")["connections"][0][
            "messages"]["payload_bytes"]
    elif name == "05-faults":
        def conv(pk, port):
            return pk[(pk["sport"] == port) | (pk["dport"] == port)].reset_index(drop=True)
        pa = toolkit.analyze(run.capture_file("a")).packets
        syn = conv(pa, 5301)
        syn_t = syn[syn["tcp_flags"] == 2]["time_s"].tolist()
        out["syn-retry-s"] = round(syn_t[1] - syn_t[0], 3)
        prb = toolkit.analyze(run.capture_file("r-b")).packets
        out["synack-count-before-link"] = int(((prb["sport"] == 5302)
                                               & (prb["tcp_flags"] == 0x12)).sum())
        d3 = conv(pa, 5303)
        out["fast-retransmit-frame"] = int(d3.index[d3["fast_retransmission"] == 1][0]) + 1
        out["dupacks-5303"] = int(((d3["sport"] == 5303) & (d3["duplicate_ack"] == 1)).sum())
        tail = conv(pa, 5304)
        out["tail-wait-s"] = round(float(tail[tail["retransmission"] == 1]["time_s"].iloc[0]
                                         - tail["time_s"].iloc[0]), 3)
        pb = toolkit.analyze(run.capture_file("b")).packets
        out["swap-dupacks"] = int(((pb["sport"] == 5306) & (pb["duplicate_ack"] == 1)).sum())
    elif name == "11-file-transfer":
        import hashlib
        from toolkit.labs import files
        drops = run.ledger().dropped("a_to_b")
        pieces = sorted(r["pkt"]["seq"] for r in drops if r["pkt"]["proto"] == "udp"
                        and r["pkt"]["len"] - 32 in (1000, 204800 % 1000))
        out["udp-missing-pieces"] = ",".join(map(str, pieces))
        out["udp-first-dropped-piece"] = pieces[0]
        out["udp-lost-on-link"] = len(pieces)
        data = bytearray(files.content(run.doc["seed"], "transfer.bin", 204800))
        for i in pieces:
            data[i * 1000:(i + 1) * 1000] = bytes(len(data[i * 1000:(i + 1) * 1000]))
        out["udp-received-sha256"] = hashlib.sha256(data).hexdigest()
        out["tcp-data-dropped"] = sum(1 for r in drops if r["pkt"]["proto"] == "tcp"
                                      and r["pkt"]["dport"] == 5201 and r["pkt"]["len"] > 0)
        out["tcp-stored-bytes"] = run.endpoint_report("tcp", "serve")["connections"][0][
            "file"]["bytes"]
    elif name in ("06-backlog", "07-server-models"):
        import gzip

        def samples(host):
            path = run.path / "kernel" / f"{host}.jsonl.gz"
            with gzip.open(path, "rt") as f:
                return [r for r in map(json.loads, f) if "sockets" in r]

        def delta(host, counter):
            seen = [r["counters"][counter] for r in samples(host)
                    if counter in (r.get("counters") or {})]
            return seen[-1] - seen[0]

        def queue_max(host, port):
            return max(s["recv_q"] for r in samples(host) for s in r["sockets"] or []
                       if s["state"] == "LISTEN" and s["local_port"] == port)
        if name == "06-backlog":
            pa = toolkit.analyze(run.capture_file("a")).packets
            pb = toolkit.analyze(run.capture_file("b")).packets
            out["accept-queue"] = queue_max("b", 5300)
            out["queue-syns"] = int(((pa["dport"] == 5300) & (pa["tcp_flags"] == 2)).sum())
            out["listen-overflows"] = delta("b", "TcpExtListenOverflows")
            out["synacks-to-nobody-b"] = int(((pb["sport"] == 5201) & (pb["tcp_flags"] == 0x12)
                                              & pb["dst"].str.startswith("10.201.4.")).sum())
            out["legit-b-syns"] = int(((pa["dport"] == 5201) & (pa["dst"] == "10.201.2.2")
                                       & (pa["tcp_flags"] == 2)).sum())
            out["syn-queue-drops-b"] = delta("b", "TcpExtTCPReqQFullDrop")
            out["cookies-c"] = delta("c", "TcpExtSyncookiesSent")
        else:
            def end(flow, side):
                return run.endpoint_report(flow, side)["end"]
            out["iterative-seconds"] = end("iterative", "send")["duration_s"]
            out["thread-seconds"] = end("thread", "send")["duration_s"]
            pb = toolkit.analyze(run.capture_file("b")).packets
            out["iterative-synacks"] = int(((pb["sport"] == 5201)
                                            & (pb["tcp_flags"] == 0x12)).sum())
            out["iterative-queue"] = queue_max("b", 5201)
            out["iterative-last-first-response"] = max(
                c["first_response_s"] for c in
                run.endpoint_report("iterative", "send")["connections"])
            out["thread-peak-threads"] = end("thread", "serve")["resources"]["peak"]["threads"]
            out["process-peak-processes"] = end("process", "serve")["resources"]["peak"][
                "processes"]
            out["process-pss"] = end("process", "serve")["resources"]["peak"]["pss_bytes"]
    return out


@pytest.mark.parametrize("lab", LABS)
def test_the_questions_accept_the_right_answer_and_reject_a_wrong_one(lab):
    from toolkit import labs
    run = labs.open_run(REPO / "captures" / lab)
    questions = labs.questions_of(run)
    right = _right_answers(run)
    assert {q.id for q in questions} == set(right), "a question without a worked answer"
    for q in questions:
        answer = labs.check_answer(run, q.id, right[q.id])
        assert answer.right is True, str(answer)
        wrong = ({"A": "B", "B": "A"}.get(right[q.id], right[q.id] + "x")
                 if isinstance(right[q.id], str) else right[q.id] + 3)
        answer = labs.check_answer(run, q.id, wrong)
        assert answer.right is False, str(answer)
        assert answer.frames, "a wrong answer is shown the rows that hold the right one"
        assert labs.check_answer(run, q.id, str(right[q.id])).right is True   # as typed
    assert labs.check_answer(run, questions[0].id, None).right is None
