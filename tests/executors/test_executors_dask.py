"""DaskExecutor on a real ``LocalCluster(processes=True, n_workers=2)`` over loopback.

One cluster per module keeps the suite fast; each test has its own journal. Worker crashes are
real SIGKILLs of Dask worker processes (their nannies start replacements).
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import cloudpickle
import pytest
from executor_cases import CASES, engine_for
from helpers import wait_until

import weft_nb
from weft_nb.errors import MissingExtraError, SchedulerUnreachableError, WorkerLostError
from weft_nb.executors import dask as dask_module
from weft_nb.executors import dask_hub, dask_task
from weft_nb.executors.dask import _DaskChannel as DaskChannel
from weft_nb.executors.dask import dask_attempt
from weft_nb.executors.dask_hub import DaskHub

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


def _topic(client: distributed.Client) -> tuple[str, list[Any]]:
    """A fresh event topic and the list its events' messages land in."""
    topic, events = f"weft-test-{uuid.uuid4().hex[:8]}", []
    client.subscribe_topic(topic, lambda event: events.append(event[1]))
    return topic, events


def _decoded(events: list[Any]) -> list[tuple[Any, ...]]:
    return [pickle.loads(data) for _, data in events]


def test_a_rerun_the_kernel_gave_up_on_ends_at_its_start(
    client: distributed.Client,
) -> None:
    """Dask started an attempt's task again after its worker died (the first start took the
    go-ahead), but the kernel had already failed the attempt (and cancelled it): the rerun must
    end at once without running the activity, not hold a worker thread waiting for the kernel."""
    name = f"weft-test-rerun-{uuid.uuid4().hex[:8]}"
    queue = distributed.Queue(name, client=client)
    queue.put(cloudpickle.dumps(("cancel", "the kernel gave up on this attempt")))
    topic, events = _topic(client)
    future = client.submit(dask_attempt, b"never unpickled", name, topic, pure=False, key=name)
    done = pickle.loads(future.result(timeout=120))  # before the fix: waited forever
    assert done[0] == dask_module._RERUN
    assert [m[::2] for m in _decoded(events)] == [("started", "rerun")]  # the activity never ran
    queue.close()


def test_a_rerun_whose_task_was_released_ends_at_its_start(
    client: distributed.Client,
) -> None:
    """Dask reran an attempt the kernel had already finished with (the worker holding the result
    died after the kernel fetched it): its go-ahead queue is released, no reply and no
    cancellation come, and the rerun must free its worker thread at once, without running the
    activity."""
    name = f"weft-test-released-{uuid.uuid4().hex[:8]}"  # no such queue on the scheduler
    topic, events = _topic(client)
    future = client.submit(dask_attempt, b"never unpickled", name, topic, pure=False)
    assert pickle.loads(future.result(timeout=120))[0] == dask_module._RERUN
    assert [m[::2] for m in _decoded(events)] == [("started", "rerun")]


def test_only_the_first_start_of_an_attempt_takes_its_go_ahead(
    client: distributed.Client,
) -> None:
    """The executor's go-ahead, taken by the first start; a second start of the same attempt
    (what Dask does after a worker death) finds none and runs nothing."""
    executor = weft_nb.DaskExecutor(client)
    ctx = SimpleNamespace(run_id="r", position=1, activity_name="a", attempt=1, cancel_reason="")
    channel = DaskChannel(executor, cast(Any, ctx))
    payload = b"not a pickle"  # the attempt fails as soon as it runs
    try:
        first = pickle.loads(
            client.submit(dask_attempt, payload, channel.name, "t", pure=False).result(timeout=120)
        )
        second = pickle.loads(
            client.submit(dask_attempt, payload, channel.name, "t", pure=False).result(timeout=120)
        )
    finally:
        channel.close()
        executor.close()
    assert first[:2] == ("done", "error")  # it ran (and failed to unpickle the payload)
    assert second[0] == dask_module._RERUN


@weft_nb.activity
def big_checkpointer(args: dict[str, Any], activity: weft_nb.ActivityContext) -> int:
    blob = b"x" * args["size"]
    activity.heartbeat({"blob": blob})  # over the event topic's limit too
    activity.checkpoint({"blob": blob})
    return len(activity.last_checkpoint["blob"])


@weft_nb.workflow
def big_checkpoints(ctx: weft_nb.WorkflowContext, args: dict[str, Any]) -> int:
    return int(ctx.run(big_checkpointer, args))


def test_a_message_over_the_event_limit_travels_on_the_attempts_queue(
    engine: weft_nb.Engine,
) -> None:
    """A checkpoint (no checkpoint storage) and a heartbeat bigger than an event may be."""
    size = dask_task.BIG * 16
    engine.register(big_checkpointer, big_checkpoints)
    assert engine.run(big_checkpoints, {"size": size}, run_id="big", timeout=120) == size
    (count,) = engine.journal.query("SELECT count(*) FROM checkpoints WHERE run_id = 'big'")[0]
    assert count == 1
    beats = engine.journal.query("SELECT count(*) FROM heartbeats WHERE run_id = 'big'")
    assert beats[0][0] >= 1
    executor = cast(weft_nb.DaskExecutor, engine.attempts)
    events = [m for _, m in executor.client.get_events(executor.hub.topic)]
    assert any(data is None for _, data in events)  # announced on the topic, carried beside it
    assert max(len(data) for _, data in events if data is not None) <= dask_task.BIG


def test_a_result_lost_with_its_worker_fails_the_attempt_instead_of_hanging(
    client: distributed.Client,
) -> None:
    """The attempt said ``finished`` but its worker died before the kernel fetched the result:
    Dask would compute the task again, so waiting for that result would never end."""
    gate = distributed.Event(f"weft-test-gate-{uuid.uuid4().hex[:8]}", client=client)
    future = client.submit(gate.wait, pure=False)  # a result that does not come
    ctx = SimpleNamespace(run_id="r", position=3, activity_name="a", attempt=1, cancel_reason="")
    executor = weft_nb.DaskExecutor(client)
    channel = DaskChannel(executor, cast(Any, ctx))
    channel.start(future)
    channel.worker = "tcp://127.0.0.1:1"  # the worker it started on is no longer in the cluster
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            channel._result()
        except BaseException as exc:
            errors.append(exc)

    fetcher = threading.Thread(target=fetch, daemon=True)
    fetcher.start()
    fetcher.join(timeout=120)
    try:
        assert not fetcher.is_alive(), "the kernel waited for a result lost with its worker"
        assert [type(e) for e in errors] == [WorkerLostError]
        assert errors[0].position == 3  # type: ignore[attr-defined]
    finally:
        gate.set()
        channel.close()
        executor.close()


def test_a_closed_executor_leaves_no_queue_and_reads_no_late_event(
    client: distributed.Client,
) -> None:
    """An event for an attempt whose channel closed reaches nobody; the spare go-ahead queues
    are released with the executor."""
    executor = weft_nb.DaskExecutor(client)
    ctx = SimpleNamespace(run_id="r", position=1, activity_name="a", attempt=1, cancel_reason="")
    channel, other = (DaskChannel(executor, cast(Any, ctx)) for _ in range(2))
    channel.close()
    client.submit(int, pure=False).result()  # after the subscription, on the same stream
    late = cloudpickle.dumps(("heartbeat", 1))
    client.log_event(executor.hub.topic, [channel.name, late])
    client.log_event(executor.hub.topic, [other.name, late])  # after it, on the same stream
    wait_until(lambda: other._arrived, timeout=60)
    assert not channel._arrived
    other.close()
    wait_until(lambda: len(executor.hub._spare) == dask_hub.SPARE, timeout=60)
    names = [queue.name for queue in executor.hub._spare] + [channel.name, other.name]
    executor.close()

    def gone(name: str) -> bool:
        try:
            client.sync(client.scheduler.queue_qsize, name=name)
        except KeyError:
            return True
        return False

    wait_until(lambda: all(gone(name) for name in names), timeout=60)


class _Events:
    """A hub recipient that keeps what arrives."""

    def __init__(self) -> None:
        self.arrived: list[bytes | None] = []

    def arrive(self, data: bytes | None) -> None:
        self.arrived.append(data)


def _log_from_worker(topic: str, name: str) -> None:
    distributed.get_worker().log_event(topic, [name, b"started"])


def test_no_attempt_starts_before_the_topic_is_subscribed(
    client: distributed.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first attempts at once: the second may not submit its task (whose events would find
    no subscriber, its requests no reply) while the first is still subscribing."""
    hub = DaskHub(client)
    subscribing, second_done = threading.Event(), threading.Event()
    subscribe = client.subscribe_topic

    def slow_subscribe(topic: str, handler: Any) -> None:
        subscribing.set()
        second_done.wait(2)  # the first caller is held up here (a preempted thread)
        subscribe(topic, handler)

    monkeypatch.setattr(client, "subscribe_topic", slow_subscribe)
    first, second = _Events(), _Events()
    opener = threading.Thread(target=hub.go_ahead, args=(first,))
    opener.start()
    assert subscribing.wait(60)
    name = hub.go_ahead(second).name
    client.submit(_log_from_worker, hub.topic, name, pure=False).result()
    second_done.set()
    opener.join()
    try:
        wait_until(lambda: second.arrived, timeout=10, what="the second attempt's event")
    finally:
        hub.close()


@weft_nb.activity
def asks_the_kernel(args: dict[str, Any], activity: weft_nb.ActivityContext) -> int:
    activity.checkpoint({"n": args["n"]})
    return int(activity.last_checkpoint["n"]) + 1  # waits for the kernel's reply, no timeout


@weft_nb.workflow
def asking(ctx: weft_nb.WorkflowContext, args: dict[str, Any]) -> int:
    return int(ctx.run(asks_the_kernel, args))


def _failing_proxy(
    client: distributed.Client, monkeypatch: pytest.MonkeyPatch, failures: int
) -> list[dict[str, Any]]:
    """Make the real client's ``scheduler.proxy`` raise its first ``failures`` calls."""
    real = client.scheduler.proxy
    failed: list[dict[str, Any]] = []

    async def proxy(**kwargs: Any) -> Any:
        if len(failed) < failures:
            failed.append(kwargs["msg"])
            raise OSError("injected: the scheduler's proxy call failed")
        return await real(**kwargs)

    monkeypatch.setattr(client.scheduler, "proxy", proxy)
    return failed


def test_a_reply_whose_delivery_fails_for_a_moment_is_delivered_again(
    engine: weft_nb.Engine, client: distributed.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel-to-worker call that fails twice still gets its reply to the waiting activity."""
    failed = _failing_proxy(client, monkeypatch, failures=2)
    engine.register(asks_the_kernel, asking)
    assert engine.run(asking, {"n": 4}, run_id="a", timeout=120) == 5
    assert len(failed) == 2
    assert engine.journal.query("SELECT count(*) FROM attempts WHERE run_id = 'a'") == [(0,)]


def test_a_reply_that_cannot_be_delivered_fails_the_attempt_instead_of_hanging(
    engine: weft_nb.Engine, client: distributed.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every try fails while the worker is alive: the activity would wait forever for its reply;
    the attempt fails as a lost worker instead (and the retry policy decides)."""
    failed = _failing_proxy(client, monkeypatch, failures=10**9)
    engine.register(asks_the_kernel, asking)
    handle = engine.start(asking, {"n": 4}, run_id="u")
    lost = "SELECT error_type FROM attempts WHERE run_id = 'u'"
    wait_until(lambda: engine.journal.query(lost), timeout=60, what="the failed attempt")
    assert engine.journal.query(lost)[0] == ("WorkerLostError",)
    assert len(failed) >= len(dask_module._DELIVERY_PAUSES) + 1
    monkeypatch.undo()
    engine.cancel("u")
    with contextlib.suppress(Exception):
        handle.result(timeout=60)
