"""DaskExecutor on a real ``LocalCluster(processes=True, n_workers=2)`` over loopback.

One cluster per module keeps the suite fast; each test has its own journal. Worker crashes are
real SIGKILLs of Dask worker processes (their nannies start replacements).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from executor_cases import CASES, engine_for

import weft_nb
from weft_nb.errors import MissingExtraError, SchedulerUnreachableError

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        resources={"gpu": 1},
    )
    with cluster, distributed.Client(cluster, set_as_default=False) as dask_client:
        yield dask_client


@pytest.fixture
def engine(tmp_path: Path, client: distributed.Client) -> Iterator[weft_nb.Engine]:
    with engine_for(tmp_path / "journal.duckdb", weft_nb.DaskExecutor(client)) as eng:
        yield eng
    client.wait_for_workers(2, timeout=60)  # a test that killed a worker leaves the cluster whole


@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_semantics_on_dask_workers(
    case: str, engine: weft_nb.Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    CASES[case](engine, folder)


def test_an_unreachable_scheduler_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(SchedulerUnreachableError) as info:
        weft_nb.Engine(
            tmp_path / "journal.duckdb",
            executor=weft_nb.DaskExecutor(address, check_timeout=1),
        )
    assert address in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_closed_client_fails_the_engine_before_the_journal_exists(tmp_path: Path) -> None:
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        dead = distributed.Client(cluster, set_as_default=False)
    dead.close()
    with pytest.raises(SchedulerUnreachableError):
        weft_nb.Engine(tmp_path / "journal.duckdb", executor=weft_nb.DaskExecutor(dead))
    assert list(tmp_path.iterdir()) == []


def test_a_queue_maps_to_the_dask_resource_of_that_name(client: distributed.Client) -> None:
    executor = weft_nb.DaskExecutor(client, queue_resources={"big": {"memory_gb": 64}})
    assert executor._resources("gpu") == {"gpu": 1}  # the workers advertise it
    assert executor._resources("big") == {"memory_gb": 64}
    assert executor._resources("cpu") is None  # nobody advertises it: any worker
    assert executor._resources(None) is None


def test_without_distributed_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    with pytest.raises(MissingExtraError) as info:
        weft_nb.DaskExecutor("tcp://127.0.0.1:8786")
    assert "weft-nb[dask]" in str(info.value)
    assert isinstance(info.value, ImportError)
