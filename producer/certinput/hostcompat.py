"""Which PKCS#12 protections a Windows host can import, by OS build number."""

from __future__ import annotations

from .model import WINDOWS_MIN_BUILD_PBES2

_KNOWN_BUILDS: dict[int, str] = {
    6001: "Windows Server 2008",
    6002: "Windows Server 2008 SP2",
    7600: "Windows Server 2008 R2",
    7601: "Windows Server 2008 R2 SP1",
    9200: "Windows Server 2012",
    9600: "Windows Server 2012 R2",
    14393: "Windows Server 2016",
    17763: "Windows Server 2019",
    20348: "Windows Server 2022",
    26100: "Windows Server 2025",
}


def windows_name(build: int) -> str:
    """E.g. 14393 -> "Windows Server 2016 (build 14393)"; unknown builds -> "Windows (build N)"."""
    return f"{_KNOWN_BUILDS.get(build, 'Windows')} (build {build})"


def supports_pbes2(build: int) -> bool:
    return build >= WINDOWS_MIN_BUILD_PBES2
