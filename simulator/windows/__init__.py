"""The simulated Windows host model: LocalMachine certificate stores, keys, persistence.

Public API:

* :class:`WindowsHost` (``WindowsHost.open(state_dir, config)``), :class:`CertificateStore`,
  :class:`StoredCertificate`, :class:`StoreNotFoundError`, :class:`HostStateError`;
* :func:`load_certificates_from_path` / :func:`load_certificate_entries`: read certificates and
  keys from PEM, DER, PKCS#7, PKCS#12 files or directories (seeding, the demo);
* :func:`inventory_record`, :func:`format_name`, :func:`thumbprint`: how Windows shows a
  certificate in ``Get-WinCertInventory`` output.

Later issues add IIS sites and bindings, SQL Server instances, CSP/KSP providers and REQUEST
store pending keys next to the stores.
"""

from simulator.windows.certificates import format_name, inventory_record, thumbprint
from simulator.windows.certstore import CertificateStore, StoredCertificate
from simulator.windows.host import HostStateError, StoreNotFoundError, WindowsHost
from simulator.windows.loading import (
    CertificateLoadError,
    LoadedCertificate,
    load_certificate_entries,
    load_certificate_file,
    load_certificates_from_path,
)

__all__ = [
    "CertificateLoadError",
    "CertificateStore",
    "HostStateError",
    "LoadedCertificate",
    "StoreNotFoundError",
    "StoredCertificate",
    "WindowsHost",
    "format_name",
    "inventory_record",
    "load_certificate_entries",
    "load_certificate_file",
    "load_certificates_from_path",
    "thumbprint",
]
