"""``python -m bench --only``: names are checked before any process starts."""

from __future__ import annotations

import argparse

import pytest

from bench.__main__ import main, scenarios


def test_only_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--only", "fleet,flet"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "no scenario 'flet'" in err
    assert "fleet affinity" in err


def test_only_grouped_selects_the_grouped_scenario() -> None:
    args = argparse.Namespace(
        full=False, hosts=4, jobs=8, warm_hosts=2, warm_jobs=4, contention_jobs=4, limit=2,
        concurrency=1, rtt_ms=0.0, nodes=1, node_threads=1, grouped=True, only="grouped",
        contention_concurrency=None,
    )
    assert [r.name for r in scenarios(args)] == ["grouped limit 1"]
    args.only = "fleet affinity, contention"
    assert [r.name for r in scenarios(args)] == ["fleet affinity", "contention"]


def test_redis_memory_help_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.redis_memory import main as redis_memory

    with pytest.raises(SystemExit) as exited:
        redis_memory(["--help"])
    assert exited.value.code == 0
    assert "python -m bench.redis_memory" in capsys.readouterr().out


def test_worker_memory_is_read_as_uss_and_pss() -> None:
    import os

    from bench.e2e import _rss_mib, _smaps_mib

    uss, pss = _smaps_mib(os.getpid())
    assert 0 < uss <= pss <= _rss_mib(os.getpid()) + 1
    assert _smaps_mib(2**22 + 1) == (0.0, 0.0)  # no such process
