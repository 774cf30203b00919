"""labkit: TCP-vs-UDP experiments with packet capture, and an analyzer that agrees with Wireshark.

    >>> import toolkit
    >>> a = toolkit.analyze("captures/demo.pcapng")
    >>> a.tcp          # one row per TCP conversation (pandas DataFrame)
    >>> a.udp          # one row per UDP conversation
    >>> a.packets      # one row per frame, with Wireshark's tcp.analysis verdicts
    >>> toolkit.analyze_many(["captures/"], "out/")   # every capture, on every core
"""

__version__ = "0.1.0"
__all__ = ["analyze", "analyze_many", "Analysis", "CaptureError", "read_capture",
           "__version__"]


def __getattr__(name):
    # numba and pandas load only when the analyzer is first used
    if name in ("analyze", "Analysis"):
        from . import api
        return getattr(api, name)
    if name == "analyze_many":
        from .many import analyze_many
        return analyze_many
    if name in ("CaptureError", "read_capture"):
        from . import pcap
        return getattr(pcap, name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
