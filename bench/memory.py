"""Memory of a cached (idle, pooled) WinRM session:
``python -m bench.memory [--sessions N] [--transport https [--public-roots | --insecure]]``.

Opens ``N`` pooled sessions from this process to ``N`` simulated hosts served by a child process
(HTTP, NTLM, message encryption; or with ``--transport https`` NTLM over TLS, the simulator's CA
as ``WINCERT_CA_BUNDLE``, plus certifi's public roots in that bundle with ``--public-roots`` — the
size of the trust store a worker without ``WINCERT_CA_BUNDLE`` loads; or with ``--insecure`` jobs
with ``cert_validation: false`` and ``WINCERT_ALLOW_INSECURE_TLS``; one inventory each, so each
pool holds the library functions it used), twice, after a warm-up session:

* first with ``tracemalloc`` off: this process's private memory (``RssAnon``, KiB) and RSS
  (``VmRSS``: shared-library pages included) growth per session — what the pool's memory bound
  (:data:`worker.settings.SESSION_RSS_KIB`) must use;
* then ``N`` more with ``tracemalloc`` on: the Python heap held per session (tracemalloc's own
  tables cost RSS per traced block, so no RSS figure is taken in this pass).

Each session also holds one TCP socket (file descriptor) to its host.
``WINCERT_SESSION_POOL_MEMORY_MIB`` / the private figure is how many idle sessions one worker
process keeps at most.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import tempfile
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import certifi

from bench.e2e import _rss_mib, host_configs
from producer.messages import InventoryJob
from simulator.config import SimulatorConfig
from simulator.server import Simulator
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.session import SessionOptions, make_session_factory
from worker.settings import load_settings


def _serve(count: int, transport: str, state_dir: str, ready: Any, stop: Any) -> None:
    """Child process: serve ``count`` hosts over ``transport`` (``http``/``https``), report
    ``(address, port)`` pairs and the CA bundle path (None for HTTP), wait for ``stop``."""
    hosts = [h.model_copy(update={"transport": transport}) for h in host_configs(count, 0)]
    sim = Simulator(SimulatorConfig(state_dir=Path(state_dir), hosts=hosts)).start()
    bundle = sim.hosts[0].ca_bundle
    ready.put(([(h.bind, h.port) for h in sim.hosts], str(bundle) if bundle else None))
    stop.wait()
    sim.stop()


def _job(host: tuple[str, int], protocol: str, cert_validation: bool = True) -> InventoryJob:
    return InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": host[0],
                "store_path": "My",
                "protocol": protocol,
                "cert_validation": cert_validation,
                "port": host[1],
                "auth": "ntlm",
                "credential": {
                    "kind": "inline",
                    "username": "Administrator",
                    "password_plaintext": "Bench-Passw0rd!",
                },
            },
        }
    )


def measure(
    sessions: int, transport: str = "http", public_roots: bool = False, insecure: bool = False
) -> dict[str, Any]:
    """Open ``2 x sessions`` pooled sessions (after a warm-up one) over ``transport`` and return
    the figures: KiB per idle session of private memory, RSS and Python heap (see the module
    docstring); ``public_roots``: HTTPS trusts certifi's roots besides the simulator's CA;
    ``insecure``: the jobs turn certificate validation off."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="wincert-bench-mem-") as tmp:
        ready, stop = context.Queue(), context.Event()
        server = context.Process(
            target=_serve, args=(2 * sessions + 1, transport, tmp, ready, stop), daemon=True
        )
        server.start()
        hosts, ca_bundle = ready.get(timeout=300)
        bundle: Path | None = Path(ca_bundle) if ca_bundle else None
        if bundle is not None and public_roots:
            bundle = Path(tmp) / "bundle-with-public-roots.pem"
            bundle.write_bytes(Path(ca_bundle).read_bytes() + Path(certifi.where()).read_bytes())
        resolver = CredentialResolver(
            load_settings(allow_plaintext_secrets=True, allow_insecure_tls=insecure), environ={}
        )
        validate = not insecure
        factory = make_session_factory(
            SessionOptions(ca_bundle=bundle, session_idle_seconds=600, session_pool_size=2 * sessions + 1)
        )
        pid = os.getpid()
        try:
            # warm-up: imports, caches, library pages
            _inventory(hosts[:1], transport, factory, resolver, validate)
            gc.collect()
            before_anon, before_rss = _rss_mib(pid, "RssAnon"), _rss_mib(pid)
            _inventory(hosts[1 : sessions + 1], transport, factory, resolver, validate)
            gc.collect()
            anon = _rss_mib(pid, "RssAnon") - before_anon
            rss = _rss_mib(pid) - before_rss
            tracemalloc.start()
            before_heap = _worker_heap()
            _inventory(hosts[sessions + 1 :], transport, factory, resolver, validate)
            gc.collect()
            heap = _worker_heap() - before_heap
            tracemalloc.stop()
            assert factory.pool is not None and factory.pool.idle_count() == 2 * sessions + 1
        finally:
            factory.close()
            stop.set()
            server.join(30)
    return {
        "sessions": sessions,
        "transport": transport
        + (" (trusting certifi's public roots too)" if public_roots else "")
        + (" (cert_validation false)" if insecure else ""),
        "private_kib_per_session": round(anon * 1024 / sessions, 1),
        "rss_kib_per_session": round(rss * 1024 / sessions, 1),
        "heap_kib_per_session": round(heap / 1024 / sessions, 1),
        "sockets_per_session": 1,
    }


def _inventory(
    hosts: list[tuple[str, int]],
    transport: str,
    factory: Any,
    resolver: CredentialResolver,
    cert_validation: bool = True,
) -> None:
    """One inventory per host over ``transport`` through ``factory``'s pool (each leaves one
    idle session)."""
    for host in hosts:
        result = jobs.run(_job(host, transport, cert_validation), factory, resolver).result
        assert result.status.value == "success", result.message


def _worker_heap() -> int:
    """Bytes of Python heap tracemalloc sees allocated (the hosts run in another process)."""
    return int(tracemalloc.get_traced_memory()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100, help="sessions per pass (default 100)")
    parser.add_argument("--transport", choices=("http", "https"), default="http", help="default http")
    parser.add_argument(
        "--public-roots",
        action="store_true",
        help="https: also trust certifi's public roots (the default trust store's size)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="https: jobs with cert_validation false (the worker allows insecure TLS)",
    )
    args = parser.parse_args(argv)
    figures = measure(max(1, args.sessions), args.transport, args.public_roots, args.insecure)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
