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
from worker.jobs import check_bindings
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


# -- host names: IDNA 2008 / UTS 46 ------------------------------------------------------------

# (given, A-label form the worker sends) — None: refused by both sides.
IDN_CORPUS: list[tuple[str, str | None]] = [
    ("straße.example.test", "xn--strae-oqa.example.test"),  # IDNA 2003 gave strasse.example.test
    ("ß.example", "xn--zca.example"),
    ("faß.de", "xn--fa-hia.de"),
    ("Bücher.Example.Test", "xn--bcher-kva.example.test"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
    ("*.Straße.example", "*.xn--strae-oqa.example"),
    ("münchen.de", "xn--mnchen-3ya.de"),
    ("café.fr", "xn--caf-dma.fr"),
    ("ΣΟΦΟΣ.gr", "xn--0xaakcn.gr"),  # final sigma kept (non-transitional)
    ("σοφος.gr", "xn--0xaajbq.gr"),
    ("日本語.jp", "xn--wgv71a119e.jp"),
    ("пример.испытание", "xn--e1afmkfd.xn--80akhbyknj4f"),
    ("ドメイン.テスト", "xn--eckwd4c7c.xn--zckzah"),
    ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "example.com"),  # full-width EXAMPLE, mapped
    ("Ⅻ.example", "xii.example"),  # compatibility mapping
    ("ﬁ.example", "fi.example"),
    ("WWW.CONTOSO.COM", "www.contoso.com"),
    ("x", "x"),
    ("*.example.com", "*.example.com"),
    ("xn--zz.example", None),  # invalid A-label (bad punycode)
    ("xn--abc.example", None),  # decodes to C1 controls
    ("xn--a.example", None),
    ("xn--ls8h.la", None),  # emoji: disallowed in IDNA 2008
    ("💩.la", None),
    ("a_b.example", None),  # STD3 rules
    ("-x.example", None),
    ("x-.example", None),
    ("ab--c.example", None),  # hyphens in 3rd and 4th position
    ("a\u200cb.example", None),  # ZWNJ outside its CONTEXTJ rule
    ("١٢٣.example", None),  # bidi rule
    ("a" * 64 + ".com", None),  # label longer than 63
]


@pytest.mark.parametrize(("given", "expected"), IDN_CORPUS)
def test_worker_and_host_agree_on_host_names(given: str, expected: str | None) -> None:
    try:
        worker_form: str | None = entry_parameters.normalize_host_name(given)
    except ValueError:
        worker_form = None
    assert worker_form == expected
    host_forms = sim_iis.idn_forms(given)  # the model of ConvertTo-WinCertPrivateIdnHost
    if expected is None:
        assert host_forms is None  # a name IIS stores that way matches no job host
        return
    assert host_forms is not None and host_forms[0] == expected  # a stored U-label binding matches
    # the host never re-normalises what the worker sends: its form is a fixed point there
    sent = sim_iis.idn_forms(expected)
    assert sent is not None and sent[0] == expected
    assert sent[1] == entry_parameters.unicode_host_name(expected)


def test_powershell_uses_idnmapping_with_std3_rules() -> None:
    block = _ps_block("Common.ps1", "function ConvertTo-WinCertPrivateIdnHost {")
    assert "[System.Globalization.IdnMapping]::new()" in block
    assert "$mapping.UseStd3AsciiRules = $true" in block
    assert "$mapping.AllowUnassigned = $false" in block
    assert ".GetAscii($body).ToLowerInvariant()" in block
    # the functions that take a HostName compare through it, never by raw text
    iis = read_script("Iis.ps1")
    assert iis.count("Get-WinCertPrivateBindingKey") >= 5
    assert "$binding.BindingInformation -eq $information" not in iis


# -- SQL Server: ECDSA by version, key access by SID -------------------------------------------

SQL_VERSIONS = ["", "garbage", "12.0.6024.0", "13.0.5026.0", "14.0.3456.2", "15.0.2000.5", "15.0.4430.1",
                "16.0.1000.6", "16.0.4135.4", "17.0.1000.7", " 16.0.4135.4 "]


def test_sql_ecc_rule_is_one_number_and_one_text() -> None:
    from simulator.windows import sql as sim_sql
    from worker.jobs import winsql

    block = _ps_block("Common.ps1", "function Test-WinCertPrivateSqlEccSupport {")
    match = re.search(r"\$eccMinimumMajor = (\d+)", block)
    assert match is not None
    assert int(match.group(1)) == winsql.ECC_MINIMUM_MAJOR_VERSION == sim_sql.ECC_MINIMUM_MAJOR_VERSION == 16
    assert "ECDSA certificates need SQL Server 2022 (16.x) or later" in block
    assert "its version could not be read" in block
    for version in SQL_VERSIONS:
        assert winsql.ecc_problem(version) == sim_sql.ecc_problem(version), version
    assert winsql.ecc_problem("15.0.4430.1") is not None  # SQL Server 2019, any CU
    assert winsql.ecc_problem("16.0.1000.6") is None


def test_key_access_goes_by_sid_never_by_english_name() -> None:
    from simulator.windows import sql as sim_sql

    sid_block = _ps_block("Common.ps1", "function ConvertTo-WinCertPrivateAccountSid {")
    for sid in ("S-1-5-18", "S-1-5-19", "S-1-5-20"):
        assert f"'{sid}'" in sid_block
    service_block = _ps_block("Common.ps1", "function Get-WinCertPrivateServiceSid {")
    for part in ("SHA1", "[System.Text.Encoding]::Unicode", "ToUpperInvariant()", "'S-1-5-80-'", "ToUInt32"):
        assert part in service_block
    sql = read_script("Sql.ps1")
    assert "NTAccount]::new($account).Translate" not in sql  # the English-name lookup is gone
    assert "$sidType -eq 1 -or $sidType -eq 3" in sql
    # the simulator's service SID is Windows' (sc showsid MSSQLSERVER)
    assert sim_sql.service_sid("MSSQLSERVER") == (
        "S-1-5-80-3880718306-3832830129-1677859214-2598158968-1052248003")
    assert sim_sql.service_sid("mssqlserver") == sim_sql.service_sid("MSSQLSERVER")
    assert sim_sql.account_sid("LocalSystem", "H", "de-DE") == ("S-1-5-18", "NT-AUTORITÄT\\SYSTEM")
    assert sim_sql.account_sid("NT AUTHORITY\\NetworkService", "H", "de-DE")[0] == "S-1-5-20"
    with pytest.raises(LookupError):
        sim_sql.account_sid("NT AUTHORITY\\SYSTEM", "H", "de-DE")  # what localized Windows does


# -- check mode: http.sys endpoint and shadowing (worker/jobs/check_bindings.py) ----------------

_BINDINGS = [
    ("*", 443, "", 0),
    ("*", 443, "www.example.test", 1),
    ("127.0.0.5", 443, "", 0),
    ("[::1]", 8443, "", 0),
    ("[0:0::1]", 8443, "a.example.test", 0),
    ("192.0.2.10", 443, "b.example.test", 1),
    ("*", 444, "xn--bcher-kva.example", 1),
]


@pytest.mark.parametrize(("ip", "port", "host", "flags"), _BINDINGS)
def test_check_mode_endpoint_is_the_hosts(ip: str, port: int, host: str, flags: int) -> None:
    assert check_bindings.endpoint_key(ip, port, host, flags) == sim_iis.endpoint_of(
        f"{ip}:{port}:{host}", flags
    )


def test_check_mode_shadowing_is_the_hosts() -> None:
    keys = [
        "ipport=0.0.0.0:443",
        "ipport=127.0.0.5:443",
        "ipport=[::]:443",
        "ipport=[::1]:443",
        "hostnameport=www.example.test:443",
        "hostnameport=a.example.test:8443",
        "ccs=443",
        "ipport=127.0.0.5:8443",
    ]
    mappings = {key: sim_iis.SslCertificateMapping("AB" * 20, "My") for key in keys}
    for new in keys:
        expected = {other for other, _direction in sim_iis.shadowing(new, mappings)}
        texts = check_bindings.shadowing(new, [(key, "AB" * 20) for key in keys])
        assert len(texts) == len(expected), new
        for other in expected:
            assert any(check_bindings.describe_endpoint(other) in text for text in texts), (new, other)
    # the PowerShell Format-Endpoint words the endpoints as describe_endpoint does
    text = _ps_block("Iis.ps1", "function Format-Endpoint {")
    assert "'IP:port {0}'" in text and "'central certificate store port {0}'" in text
    assert "'host:port {0}'" in text
