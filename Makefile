# The two commands of the README: `make demo` and `make test`.
# Everything they need is installed from here: Python packages into .venv,
# and (when run as root on Debian) the capture and network tools.

VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
# command:package pairs; installed together when any is missing
SYSTEM_TOOLS = tshark:tshark dumpcap:wireshark-common tcpdump:tcpdump nft:nftables \
               ethtool:ethtool ip:iproute2 ping:iputils-ping gcc:gcc

# reference tools the endpoint benchmark compares against
BENCH_TOOLS  = iperf3:iperf3 sockperf:sockperf

.PHONY: test demo venv aot system-deps bench bench-endpoints clean notebooks

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# the analyzer's kernels, compiled for this machine once rather than in a user's first
# `labkit analyze` (or in each test worker): just in time into numba's cache, then ahead of
# time into toolkit/pcap/_kernels*.so, which loads without numba (toolkit/pcap/aot.py);
# quick when up to date, rebuilt after a change to the analyzer's sources
aot: venv
	$(PY) -m toolkit.pcap.aot

system-deps: TOOLS = $(SYSTEM_TOOLS)
bench-deps: TOOLS = $(SYSTEM_TOOLS) $(BENCH_TOOLS)
system-deps bench-deps:
	@missing=""; for pair in $(TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || [ -x /sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing:$$missing"; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true; \
	  apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "note: missing$$missing (run 'make test' as root on Debian to install them; tests that need them are skipped with a reason)"; \
	fi

# two test files at a time (pytest-xdist, a file stays on one worker: its lab and fixtures
# are shared): most tests wait on links, timers and pacing, and every timing promise is
# kept or reported under load (docs/timing.md). TEST_JOBS=0 runs them one by one.
TEST_JOBS ?= 2
test: bench-deps aot
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

demo: system-deps aot
	$(VENV)/bin/labkit demo

# JupyterLab from the project's venv, on the notebooks (a saved run without privileges,
# a live run where the machine can build a lab)
notebooks: aot
	$(VENV)/bin/pip install -q -e '.[test,notebooks]'
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: system-deps aot
	$(PY) benchmarks/analyze_speed.py
	$(PY) benchmarks/analyze_many_speed.py

bench-endpoints: venv bench-deps
	$(PY) benchmarks/endpoints_vs_iperf3.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info toolkit/pcap/_kernels*
