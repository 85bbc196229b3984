"""Hostile values in every user-controlled field, through the real path (``producer.Client`` →
Redis → ``celery worker`` subprocess → WinRM → simulator).

Quotes, ``$``, ``$(...)``, backticks, ``;``, ``[ ]``, ``*``, a leading ``-`` and non-ASCII text
are data: the simulated host is configured with stores, a key storage provider, IIS sites and
SQL Server instances whose *names* are those values, and every job must hit exactly the object
of that name. Values with control characters (newlines) are refused by validation before
anything is enqueued — except passwords, which may hold anything and must simply work.

Each test proves with the host's journal that nothing outside the intended calls ran: only
``<script>`` library loads (one per library file and session, no parameters) and the intended
function calls, with the hostile values verbatim as parameter values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import SecretStr, ValidationError

from producer import Client
from producer.messages import AddJob, RemoveJob
from producer.settings import ProducerSettings
from simulator.config import (
    DEFAULT_PROVIDERS,
    DEFAULT_STORES,
    HostConfig,
    IisBindingSpec,
    IisSiteSpec,
    IisSpec,
    ProviderSpec,
    SqlInstanceSpec,
)
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_wincert_management_e2e import (
    IMPORT,
    REMOVE,
    Chain,
    add_job,
    assert_failed,
    assert_ok,
    in_store,
    make_chain,
    pfx,
    run_all,
    store_ref,
)

pytestmark = pytest.mark.e2e

HOST = "HX-2022"
HOST_INFO = "Get-WinCertHostInfo"

# Hostile, but without control characters: valid names of stores, providers, sites, instances.
HOSTILE: list[str] = [
    "My'; Remove-Item -Recurse -Force C:\\Windows; '",
    'My"; Stop-Computer -Force; "',
    "$env:COMPUTERNAME",
    "$(Stop-Computer -Force)",
    "`$(Restart-Computer)` ``",
    "My; Stop-Service WinRM",
    "[My]*",
    "-Force",
    "'; & calc.exe; #",
    "Zertifikatspeicher Ä Ö Ü 证书 ☺",
]
# Decoys a wildcard or prefix match of a hostile name would hit.
DECOY_SITES = ["My", "MyShop"]
DECOY_INSTANCES = ["MSSQLSERVER", "My"]
# Values with control characters: refused before enqueue (except as passwords).
WITH_CONTROL: list[str] = ["My\nStop-Computer -Force", "My\r\n$(whoami)", "My\tRoot", "My\x00"]
PASSWORDS: list[str] = [
    *HOSTILE,
    "line one\nline two",
    "\r\n$(whoami)\t",
    "'",
    '"',
    " leading and trailing spaces ",
    "%USERPROFILE% ^& | < > !",
]
MISSING_PROVIDER = "Contoso'; $(Stop-Computer) KSP"


def _hosts() -> list[HostConfig]:
    sites = [
        IisSiteSpec(
            name="Default Web Site",
            id=1,
            bindings=[IisBindingSpec(protocol="http", binding_information="*:80:")],
        ),
        *(IisSiteSpec(name=name) for name in DECOY_SITES + HOSTILE),
    ]
    return [
        HostConfig(
            name=HOST,
            address="127.0.0.41",
            transport="http",
            os_build=20348,
            stores=[*DEFAULT_STORES, "PASSWORDS", "PROVIDERS", *HOSTILE],
            providers=[
                *(ProviderSpec(name=n, kind=k) for n, k in DEFAULT_PROVIDERS),
                *(ProviderSpec(name=name, kind="KSP") for name in HOSTILE),
            ],
            iis=IisSpec(version="10.0", sites=sites),
            sql_instances=[SqlInstanceSpec(name=name) for name in DECOY_INSTANCES + HOSTILE],
        )
    ]


@pytest.fixture(scope="module")
def hstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("hostile-e2e"))
    # one session per job (no reuse), so each job's library loads show up in the journal
    with start_stack(
        workdir, redis_url, _hosts(), WINCERT_HOST_LIMIT="4", WINCERT_SESSION_IDLE_SECONDS="0"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(hstack: Stack) -> Iterator[Client]:
    settings = ProducerSettings(
        broker_url=hstack.redis_url, queue=hstack.queue, secret_keys=SecretStr(hstack.secret_keys)
    )
    with Client(settings) as producer:
        yield producer


@pytest.fixture
def journal(hstack: Stack) -> Iterator[None]:
    """A clean journal for the test (tests run one after another; each waits for its jobs)."""
    hstack.host(HOST).stats.reset()
    yield


def sha1(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def leaf_der(chain: Chain) -> bytes:
    return chain.leaf.public_bytes(Encoding.DER)


def _value(value: Any) -> Any:
    # SecureText (a str subclass) compares as its text (its repr hides it); byte arrays as bytes
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


def _key(call: tuple[str, dict[str, Any]]) -> str:
    name, params = call
    return repr((name, sorted((k, _value(v)) for k, v in params.items())))


def assert_only_intended_calls(
    stack: Stack, sessions: int, expected: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    """The journal holds only library loads besides exactly the ``expected`` calls (any order),
    each with exactly the expected parameters and values.

    A library load is the fixed bootstrap carrying the functions a call needs (worker/remote/
    library.py): at least one per session, at most one per call; never a script built from a value.
    """
    journal = list(stack.host(HOST).stats.journal)
    scripts = [params for name, params in journal if name == "<script>"]
    actual = [(name, params) for name, params in journal if name != "<script>"]
    assert all(params == {} for params in scripts)
    assert sessions <= len(scripts) <= len(actual), (sessions, len(scripts), len(actual))
    assert sorted(map(_key, actual)) == sorted(map(_key, expected))


# --- WinCert store path ------------------------------------------------------------------------
def test_hostile_store_paths_are_store_names(hstack: Stack, client: Client, journal: None) -> None:
    chain = make_chain("store")
    der = leaf_der(chain)
    thumbprint = sha1(der)
    before = {name: in_store(hstack, HOST, name) for name in DEFAULT_STORES}
    missing = [f"Nope {name}" for name in HOSTILE]
    added = run_all(client, [add_job(client, hstack, HOST, name, der, None) for name in HOSTILE + missing])
    for name, result in zip(HOSTILE, added[: len(HOSTILE)], strict=True):
        assert_ok(result)
        assert result.store_path == name
        assert in_store(hstack, HOST, name) == {thumbprint: False}, name
    for name, result in zip(missing, added[len(HOSTILE) :], strict=True):
        assert_failed(result, "store_not_found")
        assert result.store_path == name and name in result.message
    # decoys ("My" for "[My]*", "My'; ...") untouched
    assert {name: in_store(hstack, HOST, name) for name in DEFAULT_STORES} == before

    removed = run_all(
        client,
        [
            RemoveJob(job_type="remove", store=store_ref(hstack, HOST, name), alias=thumbprint)
            for name in HOSTILE
        ],
    )
    for name, result in zip(HOSTILE, removed, strict=True):
        assert_ok(result)
        assert in_store(hstack, HOST, name) == {}
    import_params = {"CertificateData": der, "ExpectedThumbprint": thumbprint}
    expected = [(HOST_INFO, {})] * len(HOSTILE + missing)
    expected += [(IMPORT, {"StorePath": name, **import_params}) for name in HOSTILE + missing]
    expected += [(REMOVE, {"StorePath": name, "Thumbprint": thumbprint}) for name in HOSTILE]
    assert_only_intended_calls(hstack, 2 * len(HOSTILE) + len(missing), expected)


# --- ProviderName ------------------------------------------------------------------------------
def test_hostile_provider_names_are_provider_names(hstack: Stack, client: Client, journal: None) -> None:
    chains = [make_chain(f"prov{i}") for i in range(len(HOSTILE))]
    unknown = make_chain("prov-unknown")
    jobs = [
        add_job(
            client, hstack, HOST, "PROVIDERS", pfx(c, "pw"), "pw", entry_parameters={"ProviderName": name}
        )
        for c, name in zip(chains, HOSTILE, strict=True)
    ]
    jobs.append(
        add_job(
            client,
            hstack,
            HOST,
            "PROVIDERS",
            pfx(unknown, "pw"),
            "pw",
            entry_parameters={"ProviderName": MISSING_PROVIDER},
        )
    )
    results = run_all(client, jobs)
    host = hstack.host(HOST).windows_host
    for chain, name, result in zip(chains, HOSTILE, results[:-1], strict=True):
        assert_ok(result)
        key_info = host.key_info(sha1(leaf_der(chain)))
        assert key_info is not None and key_info.provider == name
    assert_failed(results[-1], "provider_not_found")
    assert "Contoso" in results[-1].message
    assert sha1(leaf_der(unknown)) not in in_store(hstack, HOST, "PROVIDERS")
    # the PKCS#12 bytes are whatever the job carried; check them separately, then the calls
    sent = {p["ProviderName"]: p for p in _imports(hstack)}
    assert set(sent) == set(HOSTILE)  # the unknown provider never reached an import
    for c, name in zip(chains, HOSTILE, strict=True):
        assert sent[name]["ExpectedThumbprint"] == sha1(leaf_der(c))
    expected = [(HOST_INFO, {})] * len(jobs) + [(IMPORT, sent[name]) for name in HOSTILE]
    assert_only_intended_calls(hstack, len(jobs), expected)


def _imports(stack: Stack) -> list[dict[str, Any]]:
    return [params for name, params in stack.host(HOST).stats.journal if name == IMPORT]


# --- PKCS#12 passwords -------------------------------------------------------------------------
@pytest.mark.parametrize("aes", [False, True], ids=["3des", "aes"])
def test_hostile_pfx_passwords_import_fine(hstack: Stack, client: Client, journal: None, aes: bool) -> None:
    chains = [make_chain(f"pw{i}-{aes}") for i in range(len(PASSWORDS))]
    files = [pfx(c, password, aes=aes) for c, password in zip(chains, PASSWORDS, strict=True)]
    results = run_all(
        client,
        [
            add_job(client, hstack, HOST, "PASSWORDS", data, pw)
            for data, pw in zip(files, PASSWORDS, strict=True)
        ],
    )
    held = in_store(hstack, HOST, "PASSWORDS")
    for chain, password, result in zip(chains, PASSWORDS, results, strict=True):
        assert_ok(result)
        assert held[sha1(leaf_der(chain))] is True, password
        assert password not in result.message
    expected = [(HOST_INFO, {})] * len(files) + [
        (
            IMPORT,
            {
                "StorePath": "PASSWORDS",
                "CertificateData": data,
                "ExpectedThumbprint": sha1(leaf_der(c)),
                "Password": pw,
            },
        )
        for c, data, pw in zip(chains, files, PASSWORDS, strict=True)
    ]
    assert_only_intended_calls(hstack, len(files), expected)


# --- IISU SiteName / HostName ----------------------------------------------------------------------
def _iis_job(client: Client, stack: Stack, data: bytes, password: str, **entry: Any) -> AddJob:
    return AddJob(
        job_type="add",
        store=store_ref(stack, HOST, "My", store_type="IISU"),
        certificate=client.certificate_data(data, password),
        entry_parameters=entry,
    )


def test_hostile_iis_site_names_match_exactly_one_site(hstack: Stack, client: Client, journal: None) -> None:
    chain = make_chain("iis")
    data = pfx(chain, "iis")
    thumbprint = sha1(leaf_der(chain))
    ports = {name: 9000 + i for i, name in enumerate(HOSTILE)}
    results = run_all(
        client,
        [_iis_job(client, hstack, data, "iis", SiteName=name, Port=ports[name]) for name in HOSTILE],
    )
    for result in results:
        assert_ok(result)
        assert result.thumbprint == thumbprint
    host = hstack.host(HOST).windows_host
    assert sorted(host.certificate_usage(thumbprint)) == sorted(
        f"IIS site '{name}' binding *:{ports[name]}:" for name in HOSTILE
    )
    for decoy in DECOY_SITES:  # "[My]*", "My'; ..." and "My; ..." touched no other site
        assert [b for b in host.iis.find_site(decoy).bindings if b.protocol == "https"] == []

    missing = run_all(
        client, [_iis_job(client, hstack, data, "iis", SiteName=f"{name} (gone)") for name in HOSTILE]
    )
    for name, result in zip(HOSTILE, missing, strict=True):
        assert_failed(result, "site_not_found")
        assert f"{name} (gone)" in result.message

    removed = run_all(
        client,
        [
            RemoveJob(
                job_type="remove",
                store=store_ref(hstack, HOST, "My", store_type="IISU"),
                alias=f"{thumbprint}:{name}:*:{ports[name]}:",
            )
            for name in HOSTILE
        ],
    )
    for result in removed:
        assert_ok(result)
    assert host.certificate_usage(thumbprint) == []
    assert thumbprint not in in_store(hstack, HOST, "My")

    import_call = (
        IMPORT,
        {"StorePath": "My", "CertificateData": data, "ExpectedThumbprint": thumbprint, "Password": "iis"},
    )
    base = {"IPAddress": "*", "HostName": "", "SslFlags": 0, "Thumbprint": thumbprint, "StorePath": "My"}
    expected = [(HOST_INFO, {}), import_call] * (2 * len(HOSTILE))
    expected += [("Set-WinCertIisBinding", {"SiteName": n, "Port": ports[n], **base}) for n in HOSTILE]
    expected += [("Set-WinCertIisBinding", {"SiteName": f"{n} (gone)", "Port": 443, **base}) for n in HOSTILE]
    expected += [("Get-WinCertIisBinding", {})] * len(HOSTILE)
    expected += [
        ("Remove-WinCertIisBinding", {"SiteName": n, "IPAddress": "*", "Port": ports[n], "HostName": ""})
        for n in HOSTILE
    ]
    expected += [(REMOVE, {"StorePath": "My", "Thumbprint": thumbprint, "IfUnused": True})] * len(HOSTILE)
    # the site-not-found jobs found the certificate already present: nothing to roll back
    assert_only_intended_calls(hstack, 3 * len(HOSTILE), expected)


def _calls(stack: Stack) -> list[tuple[str, dict[str, Any]]]:
    return [(n, p) for n, p in stack.host(HOST).stats.journal if n != "<script>"]


def test_idn_host_name_travels_as_punycode(hstack: Stack, client: Client, journal: None) -> None:
    chain = make_chain("idn")
    data = pfx(chain, "idn")
    thumbprint = sha1(leaf_der(chain))
    (result,) = run_all(
        client,
        [
            _iis_job(
                client,
                hstack,
                data,
                "idn",
                SiteName="MyShop",
                Port=8443,
                HostName="Bücher.Example",
                SniFlag=1,
            )
        ],
    )
    assert_ok(result)
    sets = [p for n, p in _calls(hstack) if n == "Set-WinCertIisBinding"]
    assert sets == [
        {
            "SiteName": "MyShop",
            "IPAddress": "*",
            "Port": 8443,
            "HostName": "xn--bcher-kva.example",
            "SslFlags": 1,
            "Thumbprint": thumbprint,
            "StorePath": "My",
        }
    ]
    usage = hstack.host(HOST).windows_host.certificate_usage(thumbprint)
    assert usage == ["IIS site 'MyShop' binding *:8443:xn--bcher-kva.example"]


# --- WinSQL InstanceName --------------------------------------------------------------------------
def test_hostile_sql_instance_names_match_exactly_one_instance(
    hstack: Stack, client: Client, journal: None
) -> None:
    chain = make_chain("sql")
    data = pfx(chain, "sql")
    thumbprint = sha1(leaf_der(chain))
    jobs = [
        AddJob(
            job_type="add",
            store=store_ref(hstack, HOST, "My", store_type="WinSQL"),
            certificate=client.certificate_data(data, "sql"),
            entry_parameters={"InstanceName": [name]},
        )
        for name in HOSTILE
    ]
    for result in run_all(client, jobs):
        assert_ok(result)
    sql = hstack.host(HOST).windows_host.sql
    for name in HOSTILE:
        assert sql.find(name).certificate.upper() == thumbprint, name
    for decoy in DECOY_INSTANCES:
        assert sql.find(decoy).certificate == "", decoy

    missing = run_all(
        client,
        [
            AddJob(
                job_type="add",
                store=store_ref(hstack, HOST, "My", store_type="WinSQL"),
                certificate=client.certificate_data(data, "sql"),
                entry_parameters={"InstanceName": [f"{name}X"]},
            )
            for name in HOSTILE
        ],
    )
    for result in missing:
        assert_failed(result, "sql_instance_not_found")

    removed = run_all(
        client,
        [
            RemoveJob(
                job_type="remove",
                store=store_ref(hstack, HOST, "My", store_type="WinSQL"),
                alias=thumbprint,
                entry_parameters={"InstanceName": [name]},
            )
            for name in HOSTILE
        ],
    )
    for result in removed:
        assert_ok(result)
    assert all(sql.find(name).certificate == "" for name in HOSTILE)
    assert thumbprint not in in_store(hstack, HOST, "My")

    import_call = (
        IMPORT,
        {"StorePath": "My", "CertificateData": data, "ExpectedThumbprint": thumbprint, "Password": "sql"},
    )
    expected = [(HOST_INFO, {}), ("Get-WinCertSqlInstance", {}), import_call] * len(HOSTILE)
    expected += [
        ("Set-WinCertSqlCertificate", {"InstanceName": n, "Thumbprint": thumbprint, "StorePath": "My"})
        for n in HOSTILE
    ]
    expected += [(HOST_INFO, {}), ("Get-WinCertSqlInstance", {})] * len(
        HOSTILE
    )  # unknown: refused before import
    expected += [("Get-WinCertSqlInstance", {})] * len(HOSTILE)
    expected += [
        ("Clear-WinCertSqlCertificate", {"InstanceName": n, "Thumbprint": thumbprint}) for n in HOSTILE
    ]
    expected += [(REMOVE, {"StorePath": "My", "Thumbprint": thumbprint, "IfUnused": True})] * len(HOSTILE)
    assert_only_intended_calls(hstack, 3 * len(HOSTILE), expected)


# --- refused before enqueue ---------------------------------------------------------------------
def _valid_add(client: Client, stack: Stack, store_type: str, entry: dict[str, Any] | None) -> dict[str, Any]:
    """A valid Add job as the JSON dict a producer sends, then ``entry`` as its entry parameters."""
    chain = make_chain("refused")
    job = AddJob(
        job_type="add",
        store=store_ref(stack, HOST, "My", store_type=store_type),
        certificate=client.certificate_data(pfx(chain, "x"), "x"),
    ).model_dump(mode="json")
    if entry is not None:
        job["entry_parameters"] = entry
    return job


def _refused_cases(client: Client, stack: Stack) -> list[tuple[str, dict[str, Any], str]]:
    cases: list[tuple[str, dict[str, Any], str]] = []
    for bad in WITH_CONTROL:
        job = _valid_add(client, stack, "WinCert", None)
        job["store"]["store_path"] = bad
        cases.append(("store_path", job, "store_path"))
        cases.append(
            ("ProviderName", _valid_add(client, stack, "WinCert", {"ProviderName": bad}), "ProviderName")
        )
        cases.append(("SiteName", _valid_add(client, stack, "IISU", {"SiteName": bad}), "SiteName"))
        cases.append(
            ("InstanceName", _valid_add(client, stack, "WinSQL", {"InstanceName": [bad]}), "InstanceName")
        )
    for bad in [*HOSTILE, *WITH_CONTROL, "evil.example;rm", "a b.example", "*.*.example", "-lead.example"]:
        cases.append(("HostName", _valid_add(client, stack, "IISU", {"HostName": bad}), "HostName"))
        job = _valid_add(client, stack, "WinCert", None)
        job["store"]["client_machine"] = bad
        cases.append(("client_machine", job, "client_machine"))
    for bad in HOSTILE:
        job = RemoveJob(job_type="remove", store=store_ref(stack, HOST, "My"), alias="A" * 40).model_dump(
            mode="json"
        )
        job["alias"] = bad
        cases.append(("alias", job, "alias"))
    return cases


def test_control_characters_and_hostile_host_names_are_refused_before_enqueue(
    hstack: Stack, client: Client, journal: None
) -> None:
    connection = redis.Redis.from_url(hstack.redis_url)
    before = connection.llen(hstack.queue)
    cases = _refused_cases(client, hstack)
    for what, job, field in cases:
        with pytest.raises(ValidationError) as info:
            client.submit(job)
        errors = info.value.errors(include_url=False)
        locations = [".".join(str(p) for p in e["loc"]) for e in errors]
        named = any(loc.endswith(f".{field}") for loc in locations) or any(
            str(e["msg"]).startswith(f"Value error, {field}:") for e in errors
        )
        assert named, (what, locations, errors)
    assert connection.llen(hstack.queue) == before
    assert list(hstack.host(HOST).stats.journal) == []
    assert hstack.host(HOST).stats.requests_total == 0


def test_hostile_remove_alias_is_not_a_thumbprint() -> None:
    for bad in HOSTILE:
        with pytest.raises(ValidationError, match="alias"):
            RemoveJob.model_validate(
                {
                    "job_type": "remove",
                    "alias": bad + "0" * 40,
                    "store": {"store_type": "WinCert", "client_machine": "web01", "store_path": "My"},
                }
            )
