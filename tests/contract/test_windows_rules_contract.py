"""Contract: rules decided on the worker (Python) and again on the host (PowerShell) agree.

Each rule exists three times: in ``producer``/``worker`` (checked before any change on the
host), in ``worker/powershell/*.ps1`` (what runs on Windows) and in the simulator (what the
tests talk to). The tables are read out of the ``.ps1`` text and compared with the Python
ones; the decisions are compared over every input of a corpus.
"""

from __future__ import annotations

import re

import pytest

from producer import entry_parameters
from simulator.windows import iis as sim_iis
from worker.powershell import read_script

BUILDS = (7601, 9200, 9600, 14393, 17763, 19041, 20348, 26100)


def _ps_block(script: str, start: str) -> str:
    """The text from ``start`` to the first closing brace at the same nesting."""
    text = read_script(script)
    index = text.index(start)
    depth = 0
    for position in range(index + len(start) - 1, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[index : position + 1]
    raise AssertionError(f"unbalanced block after {start!r} in {script}")


# -- IIS sslFlags ------------------------------------------------------------------------------


def test_ssl_flag_feature_names_are_one_table() -> None:
    block = _ps_block("Iis.ps1", "$features = @{")
    ps_table = {int(bit): name for bit, name in re.findall(r"(\d+)\s*=\s*'([^']*)'", block)}
    assert ps_table == entry_parameters.SSL_FLAG_FEATURES == sim_iis.SSL_FLAG_FEATURES
    # the IIS configuration reference's bits: Sni, CentralCertStore, DisableHTTP2,
    # DisableOCSPStp, DisableQUIC, DisableTLS13, DisableLegacyTLS
    assert list(ps_table) == [1, 2, 4, 8, 16, 32, 64]


def test_ssl_flag_bits_per_build_are_one_table() -> None:
    text = read_script("Iis.ps1")
    rows = re.findall(r"if \(\$build -ge (\d+)\) \{ \$allowed = @\(([\d, ]+)\) \}", text)
    fallback = re.search(r"else \{ \$allowed = @\(([\d, ]+)\) \}", text)
    assert rows and fallback
    ps_rows = [(int(build), tuple(int(b) for b in bits.split(","))) for build, bits in rows]
    ps_fallback = tuple(int(b) for b in fallback.group(1).split(","))

    def ps_allowed(build: int) -> tuple[int, ...]:
        return next((bits for minimum, bits in ps_rows if build >= minimum), ps_fallback)

    for build in BUILDS:
        assert ps_allowed(build) == entry_parameters.allowed_ssl_flag_bits(build) == (
            sim_iis.allowed_ssl_flag_bits(build)
        ), build
        assert 2 not in ps_allowed(build)  # CCS never goes with a thumbprint


@pytest.mark.parametrize("build", BUILDS)
def test_worker_and_host_accept_the_same_ssl_flags(build: int) -> None:
    for flags in range(128):
        worker_problem = entry_parameters.ssl_flags_problem(flags, build)
        try:
            sim_iis.validate_ssl_flags(flags, build, "www.example.test")
        except sim_iis.IisError as exc:
            host_problem: str | None = exc.message
        else:
            host_problem = None
        assert (worker_problem is None) == (host_problem is None), (flags, worker_problem, host_problem)
        if worker_problem is not None and host_problem is not None:
            # both name the features, not only the bits
            features = entry_parameters.describe_ssl_flags(flags)
            assert f"({features})" in worker_problem and f"({features})" in host_problem


def test_feature_descriptions() -> None:
    assert entry_parameters.describe_ssl_flags(0) == "no SNI"
    assert entry_parameters.describe_ssl_flags(3) == "SNI + CCS (Centralized Certificate Store)"
    assert entry_parameters.describe_ssl_flags(1 | 4 | 8) == "SNI + HTTP/2 off + OCSP stapling off"
    assert sim_iis.describe_ssl_flags(97) == "SNI + TLS 1.3 over TCP off + legacy TLS off"
