"""Writes the lab notebooks (and inspect-capture) from the labs' own lab.toml files, so a
lab's notebook follows its questions: `python notebooks/make.py [LAB ...]` (default: every
lab listed in LABS, and inspect-capture). Kept without outputs; `make test` runs them.

A lab's entry says which pictures its notebook draws (title, toolkit.plot call) and which
frames of a.pcapng Wireshark dissects; `extra` adds (title, code) sections of its own.
"""
import sys
import tomllib
from pathlib import Path

import nbformat as nbf

REPO = Path(__file__).resolve().parents[1]

LABS = {
    "01-handshake": {"file": "01-handshake.ipynb", "plots": [
        ("The handshake as a ladder: a and b, and the link between", "plot.ladder(run, flow=\"tcp\")"),
        ("The TCP conversation's sequence numbers over time (Stevens)", "plot.time_sequence(run, stream=0, style=\"stevens\")"),
    ], "dissect": "[1, 2, 3]"},
    "03-boundaries": {"file": "03-boundaries.ipynb", "plots": [
        ("Bytes delivered over time, per flow", "plot.goodput(run)"),
        ("The unframed TCP flow: segments as bars, the ACK line and the window (tcptrace)", "plot.time_sequence(run, stream=0, style=\"tcptrace\")"),
    ], "dissect": "[1, 2]"},
    "04-loss": {"file": "04-loss.ipynb", "plots": [
        ("TCP and UDP on one time axis: delivered bytes, the link's drops and their repairs", "plot.side_by_side(run)"),
        ("The first frames of the TCP conversation as a ladder; a dropped segment ends at the link", "plot.ladder(run, flow=\"tcp\")"),
        ("Sequence numbers over time, retransmissions marked (tcptrace style)", "plot.time_sequence(run, stream=0, style=\"tcptrace\")"),
        ("RTT and congestion window: the capture's ack_rtt_s and the sender's TCP_INFO", "plot.rtt_cwnd(run, flow=\"tcp\")"),
        ("UDP by sequence number: what arrived, what was lost and where; jitter and one-way delay", "plot.udp(run, flow=\"udp\")"),
    ], "dissect": "[1, 2, 3]"},
    "05-faults": {"file": "05-faults.ipynb", "plots": [
        ("Port 5303 as a ladder: the 3rd data segment ends at the link, the duplicate ACKs, the fast retransmission", "plot.ladder(run, flow=\"data3\")"),
        ("Port 5303, sequence numbers over time: the hole and its repair one RTT later (tcptrace)", "plot.time_sequence(run, stream=None, flow=\"data3\", style=\"tcptrace\")"),
        ("Port 5304, the tail loss: nothing follows the lost request, a timer repairs it", "plot.time_sequence(run, stream=None, flow=\"tail\", style=\"tcptrace\")"),
        ("Port 5306 as a ladder, seen from both sides of the link: two segments change places", "plot.ladder(run, flow=\"swap\")"),
    ], "dissect": "[1, 2, 3]", "extra": [
        ("The faults, as the link's ledger recorded them", "run.table(\"drops\")[[\"flow\", \"direction\", \"segment\", \"flags\", \"why\", \"repair_delay_s\", \"repair_label\"]]"),
        ("Each connection's frames by number (here: port 5301's SYNs)", "pk = run.table(\"packets\", \"a\")\npk[(pk.dport == 5301) & (pk.tcp_flags == 2)][[\"stream_frame\", \"stream_time_s\", \"retransmission\"]]"),
    ]},
    "02-states": {"file": "02-states.ipynb", "plots": [
        ("Port 5201 as a ladder: the server's FIN goes first, so TIME-WAIT is the server's", "plot.ladder(run, flow=\"server-first\")"),
        ("Port 5202 as a ladder: the client's FIN, then nothing from the server for a while (CLOSE-WAIT)", "plot.ladder(run, flow=\"never-closes\")"),
    ], "dissect": "[1, 2, 3]", "extra": [
        ("The capture's state timeline (at b) next to ss on each host, on one clock (the traffic's start)", "from toolkit.labs import states\nstates.timeline(run, at=\"b\")"),
        ("The same from a's vantage point: what a's own segments change is seen earlier here, what b's segments change later", "states.timeline(run, at=\"a\")"),
        ("TIME-WAIT in ss: the timer counts down from 60 s", "ss = run.table(\"sockets\")\nss[ss.state == \"TIME-WAIT\"][[\"t_s\", \"host\", \"local_port\", \"peer_port\", \"timer\", \"timer_s\"]]"),
        ("The restarted server, in its own words", "rep = run.endpoint_report(\"server-first\", \"serve\")\nfor e in rep[\"events\"]:\n    print(f\"{e['t_s']:7.3f} s  {e['event']}  {e.get('shown', '')}\")"),
    ]},
    "10-abrupt-close": {"file": "10-abrupt-close.ipynb", "plots": [
        ("Port 5202: hello, then a RST instead of a FIN", "plot.ladder(run, flow=\"rst\")"),
        ("Port 5204: the client's FIN, the server's late write, the RST that answers it", "plot.ladder(run, flow=\"epipe\")"),
        ("Port 5203: a keep-alive answered, then probes into the void and the server's RST", "plot.ladder(run, flow=\"vanish-keepalive\")"),
        ("Port 5205: writes retransmitted with backoff until TCP_USER_TIMEOUT (tcptrace)", "plot.time_sequence(run, stream=None, flow=\"vanish-write\", style=\"tcptrace\")"),
    ], "dissect": "[1, 2, 3]", "extra": [
        ("What each server saw", "ep = run.table(\"endpoints\")\nep[ep.side == \"serve\"][[\"flow\", \"outcome\", \"errno\", \"shown\", \"connection_s\", \"writes_ok\"]]"),
        ("Each server's events, in its own words", "for f in run.doc[\"flows\"]:\n    print(f[\"name\"])\n    for e in run.endpoint_report(f[\"name\"], \"serve\")[\"events\"]:\n        print(f\"  {e['t_s']:7.3f} s  {e['event']}  {e.get('shown', '')}\")"),
        ("The closing frames at b and Wireshark's verdicts: FIN, RST, keep-alives, retransmissions", "pk = run.table(\"packets\", \"b\")\nclosing = ((pk.tcp_flags & 5) > 0) | (pk.keep_alive == 1) | (pk.keep_alive_ack == 1) | (pk.retransmission == 1)\npk[closing][[\"frame\", \"time_s\", \"sport\", \"dport\", \"tcp_flags\", \"keep_alive\", \"keep_alive_ack\", \"retransmission\"]]"),
        ("The vanishing hosts, as the link's ledger recorded them", "run.table(\"drops\")[[\"flow\", \"direction\", \"segment\", \"flags\", \"why\", \"note\"]]"),
    ]},
    "08-flow-control": {"file": "08-flow-control.ipynb", "plots": [
        ("Delivered bytes over time: TCP waits for its reader; UDP's datagrams reach b regardless", "plot.goodput(run)"),
        ("The TCP conversation's sequence numbers and b's window (tcptrace): the window line stops at the last byte sent, the probes, then the window update", "plot.time_sequence(run, stream=None, flow=\"tcp\", style=\"tcptrace\")"),
        ("UDP by sequence number as b's capture saw it: every datagram arrived there; the loss is inside b, after the capture", "plot.udp(run, flow=\"udp\")"),
    ], "dissect": "[1, 2, 3]", "extra": [
        ("The window closing and reopening, at b: zero windows, a's probes (Wireshark: keep-alive), the window update", "pk = run.table(\"packets\", \"b\")\ntcp = pk[(pk.sport == 5201) | (pk.dport == 5201)]\ntcp[(tcp.zero_window == 1) | (tcp.keep_alive == 1) | (tcp.window_update == 1)][[\"frame\", \"time_s\", \"sport\", \"seq\", \"ack\", \"tcp_len\", \"window\", \"zero_window\", \"keep_alive\", \"window_update\"]]"),
        ("Zero-window time per conversation (the tcp table at b)", "run.table(\"tcp\", \"b\")[[\"stream\", \"a_port\", \"b_port\", \"zero_windows\", \"zero_window_time_s\", \"duration_s\"]]"),
        ("b's kernel: the UDP counters over the run (UdpRcvbufErrors: datagrams dropped for a full socket buffer)", "c = run.table(\"counters\")\nc[c.counter.str.startswith(\"Udp\")]"),
        ("The UDP socket's receive queue (ss Recv-Q, bytes) against the buffer the kernel granted", "ss = run.table(\"sockets\")\nprint(\"rcvbuf granted:\", run.endpoint_report(\"udp\", \"serve\")[\"start\"][\"options\"][\"rcvbuf\"], \"bytes\")\nss[(ss.proto == \"udp\") & (ss.local_port == 5202)][[\"t_s\", \"recv_q\"]]"),
        ("Where each lost datagram was lost: the link (its ledger) or host b (its capture against the program, checked by b's counters)", "run.table(\"reconciliation\")[[\"direction\", \"flow\", \"udp_lost_link\", \"udp_lost_host\", \"host_udp_rcvbuf_errors\", \"unexplained\"]]"),
    ]},
    "09-bottleneck": {"file": "09-bottleneck.ipynb", "plots": [
        ("Goodput per flow over time at b: CUBIC alone, then beside UDP (TCP backs off, UDP does not), then beside BBR", "plot.goodput(run)"),
        ("The rr flow's RTT over time (the capture's ack_rtt_s): the link's 20 ms while the queue is empty, far more once CUBIC fills it", "plot.rtt_cwnd(run, flow=\"rr\")"),
        ("CUBIC's RTT and congestion window: the window halves at the queue's drops", "plot.rtt_cwnd(run, flow=\"cubic\")"),
        ("BBR's RTT and congestion window", "plot.rtt_cwnd(run, flow=\"bbr\")"),
        ("UDP by sequence number: the datagrams the queue dropped", "plot.udp(run, flow=\"udp\")"),
    ], "dissect": "[1, 2, 3]", "extra": [
        ("The queue's drops per flow (the link's ledger)", "d = run.table(\"drops\")\nd.groupby([\"flow\", \"reason\"]).size()"),
        ("What the queue costs in time: its length over the rate, against the rr flow's RTT samples", "from toolkit import units\nlink = run.doc[\"spec\"][\"link\"][\"a_to_b\"]\nqueue_s = units.size(link[\"queue\"]) * 8 / units.rate(link[\"rate\"])\npk = run.table(\"packets\", \"a\")\nrtt = pk[(pk.sport == 5201) & pk.ack_rtt_s.notna()][\"ack_rtt_s\"]\nprint(f\"queue {link['queue']} at {link['rate']}: {queue_s * 1e3:.0f} ms; RTT min {rtt.min() * 1e3:.1f} ms, max {rtt.max() * 1e3:.1f} ms\")\nrtt.describe()"),
        ("TCP_INFO at the end of each sender: CUBIC's ssthresh was set by a loss, BBR's was not (empty: unbounded)", "ep = run.table(\"endpoints\")\nep[ep.side == \"send\"][[\"flow\", \"tcp_info_snd_cwnd\", \"tcp_info_snd_ssthresh\", \"tcp_info_rtt_s\", \"tcp_info_total_retrans\", \"tcp_info_delivery_rate_bps\"]]"),
    ]},
    "11-file-transfer": {"file": "11-file-transfer.ipynb", "plots": [
        ("TCP and UDP on one time axis: the file's bytes delivered, the link's drops and TCP's repairs", "plot.side_by_side(run)"),
        ("The TCP transfer's sequence numbers over time, retransmissions marked (tcptrace)", "plot.time_sequence(run, stream=None, flow=\"tcp\", style=\"tcptrace\")"),
        ("The UDP pieces by number: what arrived at b, what the link dropped", "plot.udp(run, flow=\"udp\")"),
    ], "dissect": "[1, 2, 3]", "extra": [
        ("The UDP receiver's verdict: the missing pieces, the two hashes, stored or not", "e = run.table(\"endpoints\")\ne[(e.flow == \"udp\") & (e.side == \"serve\")][[\"pieces\", \"pieces_received\", \"missing_pieces\", \"sha256_announced\", \"sha256_received\", \"hash_ok\", \"stored\"]].T"),
        ("The same pieces in the link's ledger: dropped between r-a and r-b", "d = run.table(\"drops\")\nd[d.flow == \"udp\"][[\"udp_seq\", \"reason\", \"why\"]]"),
        ("The TCP receiver's verdict: size and SHA-256 checked before the file got its name", "e = run.table(\"endpoints\")\ne[(e.flow == \"tcp\") & (e.side == \"serve\")][[\"received_file_ok\", \"received_file_bytes\"]]"),
    ]},
    "06-backlog": {"file": "06-backlog.ipynb", "plots": [
        ("The legitimate client at b (no SYN cookies): its SYNs, never answered", "plot.ladder(run, flow=\"legit-b\")"),
        ("The legitimate client at c (SYN cookies): a cookie SYN-ACK, and it is in", "plot.ladder(run, flow=\"legit-c\")"),
    ], "dissect": "[1, 2, 3]", "extra": [
        ("The half-open count over time: SYN-RECV entries of port 5201 in each sample of b's and c's sockets (ss)", "import matplotlib.pyplot as plt\nss = run.table(\"sockets\")\nhalf = ss.assign(n=(ss.state == \"SYN-RECV\") & (ss.local_port == 5201)).groupby([\"host\", \"t_s\"]).n.sum().reset_index()\nfig, ax = plt.subplots(figsize=(8, 3))\nfor host, g in half.groupby(\"host\"):\n    ax.step(g.t_s, g.n, where=\"post\", label=f\"{host} ({'cookies' if host == 'c' else 'no cookies'})\")\nax.set_xlabel(\"s since the traffic began\"); ax.set_ylabel(\"half-open (SYN-RECV)\"); ax.legend()\nhalf.groupby(\"host\").n.max()"),
        ("The same from b's capture: distinct spoofed peers b sent a SYN-ACK to, over time (none ever completes)", "pk = run.table(\"packets\", \"b\")\nsa = pk[(pk.sport == 5201) & (pk.tcp_flags == 18) & pk.dst.str.startswith(\"10.201.4.\")]\nfirst = sa.drop_duplicates([\"dst\", \"dport\"])\nfirst.assign(half_open=range(1, len(first) + 1))[[\"time_s\", \"dst\", \"dport\", \"half_open\"]]"),
        ("The accept queue of b's listener on port 5300: its length (Recv-Q) against its backlog (Send-Q)", "ss = run.table(\"sockets\")\nss[(ss.host == \"b\") & (ss.state == \"LISTEN\") & (ss.local_port == 5300)][[\"t_s\", \"recv_q\", \"send_q\"]]"),
        ("Each client of the late server: how long connect() took, and when the server reached it", "import pandas as pd\npd.DataFrame(run.endpoint_report(\"queue\", \"send\")[\"connections\"])"),
        ("Every SYN a sent, and Wireshark's verdict on each (the retries)", "pk = run.table(\"packets\", \"a\")\npk[pk.tcp_flags == 2][[\"frame\", \"time_s\", \"dst\", \"sport\", \"dport\", \"retransmission\"]]"),
        ("The counters that tell the queues' story, per host", "c = run.table(\"counters\")\nc[c.counter.isin([\"TcpExtListenOverflows\", \"TcpExtListenDrops\", \"TcpExtTCPReqQFullDrop\", \"TcpExtTCPReqQFullDoCookies\", \"TcpExtSyncookiesSent\", \"TcpExtSyncookiesRecv\", \"TcpExtSyncookiesFailed\"])]"),
        ("The flood as m sent it: destination, spoofed sources, count and rate", "run.endpoint_report(\"flood-b\", \"send\")[\"end\"]"),
    ]},
    "07-server-models": {"file": "07-server-models.ipynb", "plots": [
        ("The iterative server's conversations as a ladder, a and b", "plot.ladder(run, flow=\"iterative\")"),
    ], "dissect": "[1, 2, 3]", "extra": [
        ("Each model's 8 clients: completion, first response and latency percentiles (seconds)", "ep = run.table(\"endpoints\")\nep[ep.side == \"send\"][[\"flow\", \"connected\", \"duration_s\", \"first_response_p50_s\", \"first_response_max_s\", \"latency_p50_s\", \"latency_p90_s\", \"latency_max_s\"]]"),
        ("What each server cost: connections held at once, threads, processes, descriptors, memory (MB), peak and idle", "ep = run.table(\"endpoints\")\nsv = ep[ep.side == \"serve\"].set_index(\"flow\")\nmb = lambda c: (sv[c] / 1e6).round(1)\nimport pandas as pd\npd.DataFrame({\"connections\": sv.peak_connections, \"threads\": sv.peak_threads, \"idle threads\": sv.idle_threads, \"processes\": sv.peak_processes, \"fds\": sv.peak_fds, \"idle fds\": sv.idle_fds, \"RSS MB\": mb(\"peak_rss_bytes\"), \"PSS MB\": mb(\"peak_pss_bytes\"), \"idle RSS MB\": mb(\"idle_rss_bytes\"), \"server VmHWM MB\": mb(\"server_peak_rss_bytes\")})"),
        ("The iterative server's clients, by when they got their first answer", "import pandas as pd\npd.DataFrame(run.endpoint_report(\"iterative\", \"send\")[\"connections\"]).drop(columns=[\"latency_s\"]).sort_values(\"first_response_s\")"),
        ("From b's capture: each connection's handshake (SYN-ACK) and first answer, per model", "import matplotlib.pyplot as plt\nimport pandas as pd\npk = run.table(\"packets\", \"b\")\nports = {f[\"port\"]: f[\"name\"] for f in run.doc[\"flows\"]}\nb = pk[pk.sport.isin(list(ports))]\nsyn_ack = b[b.tcp_flags == 18].groupby([\"sport\", \"dport\"]).time_s.min()\nanswer = b[b.tcp_len > 0].groupby([\"sport\", \"dport\"]).time_s.min()\nt = pd.DataFrame({\"handshake\": syn_ack, \"first_answer\": answer}).reset_index()\nt[\"model\"] = t.sport.map(ports)\nfig, ax = plt.subplots(figsize=(8, 3))\nfor i, (m, g) in enumerate(t.groupby(\"model\", sort=False)):\n    ax.scatter(g.handshake, [i] * len(g), marker=\"|\", s=200, color=\"gray\")\n    ax.scatter(g.first_answer, [i] * len(g), marker=\"o\")\nax.set_yticks(range(t.model.nunique()), list(t.groupby(\"model\", sort=False).groups)); ax.set_xlabel(\"s (b.pcapng): | handshake, o first answer\")\nt"),
        ("The iterative listener's accept queue over time (Recv-Q: clients waiting)", "ss = run.table(\"sockets\")\nss[(ss.state == \"LISTEN\") & (ss.local_port == 5201)][[\"t_s\", \"recv_q\", \"send_q\"]]"),
    ]},
}

def md(t): return nbf.v4.new_markdown_cell(t)
def code(t): return nbf.v4.new_code_cell(t)

def lab_notebook(name, conf):
    spec = tomllib.loads((REPO / "labs" / name / "lab.toml").read_text())
    lab = spec["lab"]
    cells = [md(f"# {name}: {lab['title']}\n\n{lab.get('summary','').strip()}\n\n"
                f"The lab's goals, steps and background are in [labs/{name}/README.md](../labs/{name}/README.md). "
                "Run this notebook top to bottom; the first cell decides where the data comes from.")]
    cells.append(md("## Where the data comes from\n\nA live run (`labkit run`) when this machine can build the lab "
                    "(root, or an unprivileged user namespace, and a capture tool); otherwise the saved "
                    "reference run in `captures/`. The cell says which and why. "
                    "(`LABKIT_SOURCE=saved` or `live` in the environment chooses.)"))
    cells.append(code(f"from toolkit import labs, plot\nfrom toolkit.labs import notebook as nb\n\n"
                      f"run = nb.open_run(\"{name}\")\nrun.path"))
    cells.append(md("## TCP and UDP side by side\n\nLike with like: payload bytes handed to the socket against payload bytes "
                    "the receiving program got; goodput as the receiver measured it; completion time as the sender did; "
                    "loss as each application saw it."))
    cells.append(code("nb.side_by_side(run)"))
    cells.append(md("## Ground truth, reconciled\n\nWhat the link did (its ledger), what the captures saw before and after it, "
                    "what the analyzer concluded (each drop matched to its repair by sequence number, Wireshark's label "
                    "beside it) and what the endpoints reported."))
    cells.append(code("nb.reconciliation(run)"))
    cells.append(code("print(nb.notes(run))"))
    cells.append(md("## Pictures"))
    for title, call in conf["plots"]:
        cells.append(md(f"### {title}"))
        cells.append(code(call))
    for title, src in conf.get("extra", []):
        cells.append(md(f"## {title}"))
        cells.append(code(src))
    cells.append(md("## Wireshark's view of the first frames\n\nWireshark's own dissection (every layer and field, "
                    "expert info), through tshark. Without tshark installed the cell says how to get it."))
    cells.append(code("from toolkit import wireshark\n\ntry:\n"
                      f"    frames = wireshark.dissect(run.capture_file(\"a\"), {conf['dissect']})\n"
                      "except wireshark.TsharkMissing as e:\n    frames = str(e)\nframes"))
    cells.append(md("## Questions\n\nAnswer each from your own run: put your value in `answer` and run the check cell. "
                    "It says right or wrong and, when wrong, shows the rows (the frames) that hold the answer."))
    for q in spec.get("question", []):
        cells.append(md(f"**{q['id']}**: {q['text']}"))
        cells.append(code(f"answer = None   # your answer\nnb.check(run, \"{q['id']}\", answer)"))
    nb = nbf.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    return nb



def inspect_notebook():
    return nbf.v4.new_notebook(cells=[
    md("# Inspect any capture\n\nPoint `CAPTURE` at a pcap or pcapng file (gzip too), yours or anybody's, and run "
       "the notebook: the conversation tables, per-frame verdicts equal to Wireshark's, pictures, Wireshark's own "
       "dissection of chosen frames, and a frame-by-frame cross-check of labkit against Wireshark. No privileges needed."),
    code("from pathlib import Path\nimport toolkit\nfrom toolkit import plot\nfrom toolkit.labs import notebook as nb\n\n"
         "# your capture here; by default, the sender's side of the saved loss run\n"
         "CAPTURE = nb.saved_dir(\"04-loss\") / \"a.pcapng.gz\"\n"
         "a = toolkit.analyze(CAPTURE)\na.summary()"),
    md("## TCP conversations (one row per `tcp.stream`)"),
    code("a.tcp"),
    md("## UDP conversations, and flows carrying the lab header"),
    code("a.udp"),
    code("a.udp_flows"),
    md("## TCP states over time (RFC 9293), as the segments show them"),
    code("a.tcp_states.head(20)"),
    md("## Every frame, with Wireshark's TCP verdicts"),
    code("pk = a.packets\npk[pk[\"retransmission\"] == 1].head(10)"),
    md("## Sequence numbers over time of the first TCP conversation"),
    code("plot.time_sequence(a, stream=0, style=\"stevens\")"),
    md("## Wireshark's view: chosen frames, and a frame-by-frame cross-check"),
    code("from toolkit import wireshark\n\ntry:\n    first_retransmission = int(pk[pk[\"retransmission\"] == 1][\"frame\"].iloc[0]) "
         "if pk[\"retransmission\"].any() else 1\n"
         "    view = wireshark.dissect(CAPTURE, [first_retransmission])\n"
         "except wireshark.TsharkMissing as e:\n    view = str(e)\nview"),
    code("try:\n    cc = wireshark.cross_check(CAPTURE)\nexcept wireshark.TsharkMissing as e:\n    cc = str(e)\ncc"),
], metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
             "language_info": {"name": "python"}})


def write(nb, path: Path) -> None:
    # stable cell ids: regenerating an unchanged notebook changes nothing
    for i, c in enumerate(nb.cells):
        c.id = f"cell-{i:02d}"
    nbf.write(nb, path)


if __name__ == "__main__":
    wanted = sys.argv[1:] or [*sorted(LABS), "inspect-capture"]
    for name in wanted:
        if name == "inspect-capture":
            write(inspect_notebook(), REPO / "notebooks" / "inspect-capture.ipynb")
        elif name in LABS:
            write(lab_notebook(name, LABS[name]), REPO / "notebooks" / LABS[name]["file"])
        else:
            sys.exit(f"{name}: not in LABS of notebooks/make.py (known: {', '.join(LABS)})")
        print(f"wrote notebooks/{LABS[name]['file'] if name in LABS else name + '.ipynb'}")
