"""Paired TCP and UDP senders and receivers: iperf3-class measurement that also shows what
socket-programming courses teach.

    stats.py      what a receiver computes (loss, duplicates, RFC 4737 reordering, RFC 3550
                  jitter, one-way delay), pure and batched
    control.py    in-band hello / end / report messages
    sessions.py   one TCP connection as the server sees it, with no I/O
    servers.py    the server models (iterative, thread, process, selectors, asyncio)
    tcp.py        the TCP sender's modes; tcpinfo.py samples TCP_INFO
    udp.py        the UDP sender (even pacing, GSO) and receiver (recvmmsg, kernel stamps)
    batch.py      recvmmsg and UDP_SEGMENT through ctypes
    report.py     human lines and the versioned JSON report
    sockopts.py   the socket choices; options.py their command-line flags

Kept light: importing this package imports nothing heavy (the CLI reads options.py at start).
"""
