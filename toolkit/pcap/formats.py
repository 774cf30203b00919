"""File formats, as tables of fields (dpkt style): pcap (libpcap) and pcapng.

pcap: a 24-byte file header, then records of a 16-byte header and the packet bytes.
pcapng (draft-ietf-opsawg-pcapng): blocks of (type, total length, body, total length);
a Section Header Block sets the byte order of its section, Interface Description Blocks
give each interface its link type and timestamp resolution, and packets come in Enhanced
(6), Simple (3) and obsolete (2) Packet Blocks.
"""

from __future__ import annotations

# pcap magic numbers as read little-endian from the first 4 bytes
PCAP_MAGIC = {
    0xA1B2C3D4: ("<", 1000),       # little-endian file, microseconds
    0xD4C3B2A1: (">", 1000),       # big-endian file, microseconds
    0xA1B23C4D: ("<", 1),          # little-endian, nanoseconds
    0x4D3CB2A1: (">", 1),          # big-endian, nanoseconds
}
# field, struct code
PCAP_FILE_HEADER = [("magic", "I"), ("version_major", "H"), ("version_minor", "H"),
                    ("thiszone", "i"), ("sigfigs", "I"), ("snaplen", "I"), ("linktype", "I")]
PCAP_FILE_HEADER_LEN = 24
PCAP_RECORD_HEADER = [("ts_sec", "I"), ("ts_frac", "I"), ("caplen", "I"), ("wirelen", "I")]
PCAP_RECORD_HEADER_LEN = 16
# libpcap's and Wireshark's largest packet for most link types (MAXIMUM_SNAPLEN)
MAX_PACKET = 262144

GZIP_MAGIC = b"\x1f\x8b"

# pcapng
SHB, IDB, PB, SPB, NRB, ISB, EPB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
# the largest block we accept: a packet of MAX_PACKET plus room for options
MAX_BLOCK = 16 << 20
# option codes
OPT_ENDOFOPT, OPT_COMMENT = 0, 1
IF_NAME, IF_DESCRIPTION, IF_TSRESOL, IF_TSOFFSET = 2, 3, 9, 14

# link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW_OLD, LINKTYPE_RAW = 0, 1, 12, 101
LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6 = 108, 113, 228, 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_NAMES = {0: "null", 1: "ether", 12: "raw", 101: "raw", 108: "loop",
                  113: "linux-sll", 228: "rawip4", 229: "rawip6", 276: "linux-sll2"}
