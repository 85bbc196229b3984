"""Sessions share pypsrp's connection-pool wrappers (worker.remote.shared_wrappers), and the
wrappers still refuse a new connection inside pypsrp's ``DisableNewConnectionsContext``.

A real loopback HTTP server and real requests/urllib3/pypsrp objects, as pypsrp builds them.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
import requests
from pypsrp import _pool_manager
from urllib3.util.retry import Retry

from worker.remote.shared_wrappers import share_pool_wrappers, shared_pool_classes


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _pypsrp_session() -> requests.Session:
    """A requests session with pypsrp's adapters (as ``pypsrp.wsman._TransportHTTP`` mounts them)."""
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, _pool_manager.create_request_adapter(max_retries=Retry(total=0)))
    share_pool_wrappers(session)
    return session


def test_sessions_share_one_mapping_of_wrapped_pool_classes(url: str) -> None:
    first, second = _pypsrp_session(), _pypsrp_session()
    managers = [a.poolmanager for s in (first, second) for a in s.adapters.values()]
    assert all(m.pool_classes_by_scheme is shared_pool_classes() for m in managers)
    assert first.get(url).text == "ok" and second.get(url).text == "ok"
    pools = [
        first.get_adapter(url).poolmanager.connection_from_url(url),
        second.get_adapter(url).poolmanager.connection_from_url(url),
    ]
    assert pools[0] is not pools[1]
    assert pools[0].ConnectionCls is pools[1].ConnectionCls  # one wrapped connection class
    first.close()
    second.close()


def test_a_new_connection_is_still_refused_while_new_connections_are_disabled(url: str) -> None:
    session = _pypsrp_session()
    assert session.get(url).text == "ok"
    session.get_adapter(url).poolmanager.clear()  # the next request needs a new connection
    with _pool_manager.DisableNewConnectionsContext(), pytest.raises(_pool_manager.NewConnectionDisabled):
        session.get(url)
    assert session.get(url).text == "ok"
    session.close()
