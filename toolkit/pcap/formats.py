"""File formats, as tables of fields (dpkt style): pcap (libpcap) and pcapng.

References: draft-ietf-opsawg-pcap (pcap) and draft-ietf-opsawg-pcapng (pcapng);
link types from https://www.tcpdump.org/linktypes.html.

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
BYTE_ORDER_MAGIC_BE = b"\x1a\x2b\x3c\x4d"
BYTE_ORDER_MAGIC_LE = b"\x4d\x3c\x2b\x1a"
# the largest block we accept (a sanity cap, see decode.MAX_BLOCK)
MAX_BLOCK = 16 << 20
# fixed part of each block before its options: header (type, length) included
SHB_FIXED = [("type", "I"), ("total_length", "I"), ("byte_order_magic", "I"),
             ("major", "H"), ("minor", "H"), ("section_length", "q")]          # 24 bytes
IDB_FIXED = [("type", "I"), ("total_length", "I"), ("linktype", "H"), ("reserved", "H"),
             ("snaplen", "I")]                                                 # 16 bytes
EPB_FIXED = [("type", "I"), ("total_length", "I"), ("interface_id", "I"),
             ("ts_high", "I"), ("ts_low", "I"), ("captured_len", "I"),
             ("original_len", "I")]                                           # 28 bytes
# option codes
OPT_ENDOFOPT, OPT_COMMENT = 0, 1
IF_NAME, IF_DESCRIPTION, IF_TSRESOL, IF_FCSLEN, IF_TSOFFSET = 2, 3, 9, 13, 14

# pcap's link type field: the low 16 bits are the link type, bit 26 says that bits 28-31
# give the length of a frame check sequence ending every frame, in 16-bit units
# (pcap-linktype(7), LT_FCS_LENGTH)
LINKTYPE_MASK, FCS_PRESENT = 0x03FFFFFF, 0x04000000

# link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW_OLD, LINKTYPE_RAW = 0, 1, 12, 101
LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6 = 108, 113, 228, 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_NAMES = {0: "null", 1: "ether", 12: "raw", 101: "raw", 108: "loop",
                  113: "linux-sll", 228: "rawip4", 229: "rawip6", 276: "linux-sll2"}
