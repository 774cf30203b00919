"""Reconciliation of flows that share a server port, and of a client that forges its
sources: a flow's frames are those between its own hosts (and, for a forging client, from
addresses no lab host has); the server's answers to forged addresses go to nobody and are
set aside with a note; a SYN sent again that the server never answered is named as such."""

from __future__ import annotations

import ipaddress

import pandas as pd

from toolkit.labs import reconcile as R

A, B, C, M = "10.201.1.2", "10.201.2.2", "10.201.3.2", "10.201.4.2"
FORGED = "10.201.4.130"
SYN, ACK = R.SYN, R.ACK


def _v(addr):
    v = int(ipaddress.IPv6Address(f"::ffff:{addr}"))
    return v >> 64, v & ((1 << 64) - 1)


def frames(*rows):
    """rows: (src, dst, sport, dport, flags, t_ns)"""
    out = []
    for src, dst, sp, dp, fl, t in rows:
        (sh, sl), (dh, dl) = _v(src), _v(dst)
        out.append({"src_hi": sh, "src_lo": sl, "dst_hi": dh, "dst_lo": dl, "l4": 6,
                    "sport": sp, "dport": dp, "flags": fl, "ts_ns": t})
    return pd.DataFrame(out)


FLOWS = [
    {"name": "flood-b", "proto": "tcp", "client": "m", "server": "b", "port": 5201,
     "client_addr": M, "server_addr": B},
    {"name": "legit-b", "proto": "tcp", "client": "a", "server": "b", "port": 5201,
     "client_addr": A, "server_addr": B},
    {"name": "legit-c", "proto": "tcp", "client": "a", "server": "c", "port": 5201,
     "client_addr": A, "server_addr": C},
]


def test_a_forging_client_keeps_its_forged_syns_and_the_answers_to_nobody_are_noted():
    fr = {"m": frames((FORGED, B, 1111, 5201, SYN, 1), (FORGED, C, 2222, 5201, SYN, 2)),
          "b": frames((FORGED, B, 1111, 5201, SYN, 3), (B, FORGED, 5201, 1111, SYN | ACK, 4),
                      (A, B, 41001, 5201, SYN, 5)),
          "a": frames((A, B, 41001, 5201, SYN, 6), (A, C, 41002, 5201, SYN, 7))}
    hosts = R._host_addresses(FLOWS)
    items = []
    flood = R._frames_of_flow(FLOWS[0], fr, hosts, ("a", "b"), items)
    assert len(flood["m"]) == 1                  # the SYN to c is flood-c's, not this flow's
    assert len(flood["b"]) == 1                  # the forged SYN; not a's, not the answer
    assert flood["b"]["sport"].tolist() == [1111]
    assert len(flood["a"]) == 0
    assert [(i.count, i.explained) for i in items] == [(1, True)]
    assert "no lab host" in items[0].what

    items = []
    legit = R._frames_of_flow(FLOWS[1], fr, hosts, ("a", "b"), items)
    # a's own frames to b only: the forged SYN at b belongs to nobody it knows
    assert legit["b"]["sport"].tolist() == [41001]
    assert legit["a"]["dport"].tolist() == [5201] and legit["a"]["sport"].tolist() == [41001]
    assert items == []                           # a does not forge: no note for it
    other = R._frames_of_flow(FLOWS[2], fr, hosts, ("a", "b"), [])
    assert other["a"]["sport"].tolist() == [41002]


def test_a_syn_is_answered_only_by_a_syn_ack_of_its_connection_before_it():
    back = frames((B, A, 5201, 41001, SYN | ACK, 100), (B, A, 5201, 41009, SYN | ACK, 10))
    assert R._syn_answered(back, (41001, 5201), 200)
    assert not R._syn_answered(back, (41001, 5201), 50)        # came later
    assert not R._syn_answered(back, (41002, 5201), 200)       # another connection
    assert not R._syn_answered(None, (41001, 5201), 200)
    assert not R._syn_answered(back.iloc[0:0], (41001, 5201), 200)


def test_a_client_of_n_connections_owns_n_source_ports():
    run = {"spec": {"flow": [{"name": "iter", "send": {"parallel": 8}},
                             {"name": "queue", "send": {"connections": 6}},
                             {"name": "one", "send": {"mode": "rr"}}]},
           "flows": [{"name": "iter", "client_port": 41000}, {"name": "queue",
                                                              "client_port": 42000},
                     {"name": "one", "client_port": 43000}]}
    flows = R._with_connections(run)
    assert [R._client_ports(f) for f in flows] == [(41000, 41007), (42000, 42005), 43000]
    f = frames((A, B, 41000, 5201, SYN, 1), (A, B, 41007, 5201, SYN, 2),
               (A, B, 41008, 5201, SYN, 3))
    assert R._select(f, "tcp", 5201, (41000, 41007), True)["sport"].tolist() == [41000, 41007]
    assert R._select(f, "tcp", 5201, 41008, True)["sport"].tolist() == [41008]
