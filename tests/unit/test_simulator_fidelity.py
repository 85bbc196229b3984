"""The simulator's models of what Windows does that tests used to miss (issue 12): key containers
by name, http.sys mappings without IIS bindings, both across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.config import HostConfig, IisSpec, SslMappingSpec
from simulator.windows import WindowsHost
from simulator.windows.host import KeyContainerError
from tests.unit.test_simulator_iis import bind, make_cert, out, run


def open_host(tmp_path: Path, **extra: object) -> WindowsHost:
    return WindowsHost.open(tmp_path / "host", HostConfig(name="WIN-SIM01", **extra))  # type: ignore[arg-type]


def test_key_containers_are_named_shared_deleted_and_persisted(tmp_path: Path) -> None:
    host = open_host(tmp_path, locked_key_containers=["Locked"])
    (der_a, key_a), (der_b, key_b) = make_cert("a"), make_cert("b")
    a = host.add_certificate("My", der_a, key_a, key_container="shop").thumbprint
    b = host.add_certificate("WebHosting", der_b, key_b, key_container="SHOP").thumbprint
    default = host.add_certificate("My", *make_cert("c")).key_container
    assert default.startswith("{") and default.endswith("}")  # a GUID, as a PFX import gives
    assert host.key_container_users("shop") == [("My", a), ("WebHosting", b)]  # case-insensitive

    reopened = open_host(tmp_path, locked_key_containers=["Locked"])
    assert set(reopened.key_containers) == {"shop", default}
    my = reopened.get_store("My")
    assert my is not None and my.get(a) is not None and my.get(a).key_container == "shop"  # type: ignore[union-attr]

    # Deleting a container takes the key from every certificate still naming it (Windows).
    reopened.delete_key_container("shop")
    web = reopened.get_store("WebHosting")
    assert web is not None and not web.get(b).has_private_key  # type: ignore[union-attr]
    assert "shop" not in reopened.key_containers
    der_l, key_l = make_cert("l")
    reopened.add_certificate("My", der_l, key_l, key_container="locked")
    with pytest.raises(KeyContainerError, match="Access is denied"):
        reopened.delete_key_container("locked")


def test_remove_certificate_keeps_a_container_another_certificate_names(tmp_path: Path) -> None:
    host = open_host(tmp_path)
    (der_a, key_a), (der_b, key_b) = make_cert("a"), make_cert("b")
    a = host.add_certificate("My", der_a, key_a, key_container="shared").thumbprint
    host.add_certificate("Root", der_b, key_b, key_container="shared")
    ctx = run(host, "Remove-WinCertCertificate", StorePath="My", Thumbprint=a)
    assert out(ctx) == [{"Thumbprint": a, "Outcome": "removed", "UsedBy": []}] and ctx.warnings == []
    assert host.key_containers == ["shared"]


def test_http_sys_mappings_without_bindings_survive_binding_changes_and_restarts(tmp_path: Path) -> None:
    spec = IisSpec(ssl_mappings=[
        SslMappingSpec(kind="ipport", endpoint="192.0.2.99:443", certificate_thumbprint="AB" * 20),
        SslMappingSpec(kind="hostnameport", endpoint="Bücher.Example:8443", certificate_thumbprint="CD" * 20),
        SslMappingSpec(kind="ccs", endpoint="9443"),
    ])
    host = open_host(tmp_path, iis=spec)
    assert host.iis is not None
    assert set(host.iis.ssl_mappings) == {
        "ipport=192.0.2.99:443", "hostnameport=xn--bcher-kva.example:8443", "ccs=9443"}
    der, key = make_cert("x")
    thumb = host.add_certificate("My", der, key).thumbprint
    bind(host, thumb, ip="10.0.0.1", port=8080)
    run(host, "Remove-WinCertIisBinding", SiteName="Default Web Site", IPAddress="10.0.0.1", Port=8080,
        HostName="")
    reopened = open_host(tmp_path, iis=spec)
    rows = {r["Endpoint"]: r for r in out(run(reopened, "Get-WinCertHttpSysMapping"))}
    assert set(rows) == {"192.0.2.99:443", "xn--bcher-kva.example:8443", "9443"}
    assert rows["192.0.2.99:443"] == {"Kind": "ipport", "Endpoint": "192.0.2.99:443",
                                      "CertificateHash": "AB" * 20, "CertificateStoreName": "My",
                                      "IisBindings": []}
    assert rows["9443"]["Kind"] == "ccs"
