"""labkit: TCP-vs-UDP experiments with packet capture, and an analyzer that agrees with Wireshark."""

__version__ = "0.1.0"
