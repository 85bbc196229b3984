"""Where a worker's prometheus-client multiprocess files live: one directory per worker node.

Prefork pool processes cannot share the main process's in-memory metrics, so prometheus-client
runs in multiprocess mode: every process writes its samples to ``*.db`` files in
``PROMETHEUS_MULTIPROC_DIR`` and the main process serves their sum. That variable must be set
**before** ``prometheus_client`` is imported, so :mod:`worker` calls :func:`configure` when the
package is imported — in the worker's main process, before any pool process is forked.

Chosen automatically, no setting needed (``celery -A worker.app worker`` with any pool):

* base directory: ``WINCERT_METRICS_DIR`` (or ``PROMETHEUS_MULTIPROC_DIR``) when set, else
  ``$XDG_RUNTIME_DIR/wincert-metrics`` when that runtime directory exists, else
  ``<temp dir>/wincert-metrics-<uid>`` (created mode 0700, refused if another user owns it);
* this worker's directory: ``<base>/<node name>.<pid of the worker's main process>``, e.g.
  ``w1@web01.1234``; ``PROMETHEUS_MULTIPROC_DIR`` is set to it (pool processes inherit it).

Cleaning touches only this node: at start, directories of the same node name whose main process
is gone are removed (and this directory emptied if a reused pid left one); at shutdown this
directory is removed. Another worker's directory — another node name, or the same name with a
live process — is never touched, so two workers on one machine keep their own samples.

Outside a worker (tests, tools importing :mod:`worker`) nothing is configured unless
``PROMETHEUS_MULTIPROC_DIR`` is already set.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BASE_ENV = "WINCERT_METRICS_DIR"
CHOSEN_ENV = "WINCERT_METRICS_NODE_DIR"
"""Set to the directory :func:`configure` chose (so the worker can clean exactly that one)."""

_SAFE = re.compile(r"[^A-Za-z0-9@._-]")


class MetricsDirError(RuntimeError):
    """The metrics directory cannot be used; the message says which and how to fix it."""


def is_worker_command(argv: Sequence[str]) -> bool:
    """True for ``celery ... worker ...`` (``celery`` script or ``python -m celery``)."""
    if not argv:
        return False
    program = Path(argv[0])
    celery = program.name == "celery" or (program.name == "__main__.py" and program.parent.name == "celery")
    asks_help = any(arg in ("-h", "--help") for arg in argv[1:])
    return celery and "worker" in argv[1:] and not asks_help


def node_name(argv: Sequence[str]) -> str:
    """The worker's node name as Celery will compute it: ``-n/--hostname`` (``%h``, ``%n``,
    ``%d`` expanded) or ``celery@<host name>``."""
    from celery.utils.nodenames import default_nodename, host_format

    given: str | None = None
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg in ("-n", "--hostname") and i + 1 < len(args):
            given = args[i + 1]
        elif arg.startswith("--hostname="):
            given = arg.split("=", 1)[1]
        elif arg.startswith("-n") and len(arg) > 2 and not arg.startswith("--"):
            given = arg[2:]
    return str(default_nodename(host_format(given) if given else ""))


def default_base(environ: Mapping[str, str]) -> Path:
    """``$XDG_RUNTIME_DIR/wincert-metrics`` if the runtime dir exists, else a per-user temp dir."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir() and os.access(runtime, os.W_OK):
        return Path(runtime) / "wincert-metrics"
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"wincert-metrics-{uid}"


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) or check that an existing one is a real directory we own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise MetricsDirError(f"{path} is not a directory; set {BASE_ENV} to a directory of your own")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise MetricsDirError(
            f"{path} belongs to another user (uid {info.st_uid}); set {BASE_ENV} to a directory of your own"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def node_dir(base: Path, node: str, pid: int) -> Path:
    """``<base>/<node>.<pid>`` (characters other than letters, digits, ``@._-`` become ``_``)."""
    return base / f"{_SAFE.sub('_', node)}.{pid}"


def clean_node(base: Path, node: str, own: Path) -> list[Path]:
    """Remove this node's directories left by exited main processes, empty ``own``; return what
    was removed. Other nodes' directories and live processes' are never touched."""
    prefix = _SAFE.sub("_", node) + "."
    removed: list[Path] = []
    for entry in base.iterdir():
        if entry == own or not entry.name.startswith(prefix) or entry.is_symlink() or not entry.is_dir():
            continue
        pid_text = entry.name[len(prefix) :]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if own.is_dir():
        for stale in own.iterdir():
            stale.unlink(missing_ok=True)
    return removed


def configure(
    argv: Sequence[str] | None = None, environ: MutableMapping[str, str] | None = None
) -> Path | None:
    """Choose and create this worker's multiprocess directory; set ``PROMETHEUS_MULTIPROC_DIR``.

    Returns the directory, or None when this process is not a Celery worker (then only an
    explicit ``PROMETHEUS_MULTIPROC_DIR`` is created, as before).

    Raises:
        MetricsDirError: the base directory is unusable (owned by another user, not a directory).
    """
    argv = sys.argv if argv is None else argv
    env = os.environ if environ is None else environ
    if not is_worker_command(argv):
        if env.get(MULTIPROC_ENV):
            Path(env[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)
        return None
    chosen = env.get(CHOSEN_ENV)
    inherited = bool(chosen) and env.get(MULTIPROC_ENV) == chosen
    if inherited and str(chosen).endswith(f".{os.getpid()}"):
        return Path(str(chosen))  # already configured in this process
    if env.get(BASE_ENV):
        base = Path(env[BASE_ENV])
    elif inherited:  # started by another worker: use its base, never its directory
        base = Path(str(chosen)).parent
    elif env.get(MULTIPROC_ENV):
        base = Path(env[MULTIPROC_ENV])
    else:
        base = default_base(env)
    _private_dir(base)
    own = node_dir(base, node_name(argv), os.getpid())
    clean_node(base, node_name(argv), own)
    own.mkdir(mode=0o700, exist_ok=True)
    env[MULTIPROC_ENV] = str(own)
    env[CHOSEN_ENV] = str(own)
    return own


def remove_own(environ: Mapping[str, str] | None = None) -> None:
    """Remove the directory :func:`configure` chose for this worker (at worker shutdown)."""
    env = os.environ if environ is None else environ
    chosen = env.get(CHOSEN_ENV)
    if chosen and env.get(MULTIPROC_ENV) == chosen and Path(chosen).name.endswith(f".{os.getpid()}"):
        shutil.rmtree(chosen, ignore_errors=True)
