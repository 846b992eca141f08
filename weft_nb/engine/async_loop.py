"""The private event loop of an ``async def`` workflow: on the run's thread, idle on the clock.

An async workflow's coroutine is driven by an asyncio loop that belongs to its run and lives on
the run's thread (never the kernel's loop, so nothing here needs ``nest_asyncio``). Steps still
run on the engine's worker threads; when one settles, its thread wakes the loop with
``call_soon_threadsafe``.

The loop waits for that wake-up on the engine's clock (`Clock.wait()`), not in a bare
``select``: a virtual clock must see the workflow thread blocked to move time on its own, as it
does for a sync workflow blocked in ``future.wait()``. Cancelling or stopping the run wakes the
workflow as it wakes a sync one: the steps, sleeps and signal waits it awaits end, and raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import selectors
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from weft_nb.base.clock import Clock

T = TypeVar("T")


class _ClockSelector(selectors.BaseSelector):
    """A selector whose blocking waits are clock waits on ``wake`` (sockets are polled after).

    A workflow's loop has no sockets of its own but asyncio's self-pipe; every cross-thread
    wake-up also sets ``wake`` (see `_RunLoop.call_soon_threadsafe`).
    """

    def __init__(self, clock: Clock, wake: threading.Event) -> None:
        self._inner = selectors.DefaultSelector()
        self._clock = clock
        self._wake = wake
        self.turns = 0  # how many times the loop looked for work: ages un-awaited calls

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.turns += 1
        if timeout is None:
            self._clock.wait(self._wake, None)  # a participant blocked: virtual time may move
        elif timeout > 0:
            # An asyncio timer (asyncio.sleep in the workflow: not durable) counts real time.
            threading.Event.wait(self._wake, timeout)
        self._wake.clear()  # what set it is in the loop's ready queue already
        return self._inner.select(0)

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Any:
        return self._inner.get_map()


class _RunLoop(asyncio.SelectorEventLoop):
    """A selector loop whose thread-safe callbacks also set the clock event it waits on."""

    def __init__(self, selector: _ClockSelector, wake: threading.Event) -> None:
        super().__init__(selector)
        self.clock_selector = selector
        self._weft_wake = wake

    def call_soon_threadsafe(  # type: ignore[override]  # the same signature, untyped variadics
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.Handle:
        handle = super().call_soon_threadsafe(callback, *args, context=context)
        self._weft_wake.set()
        return handle


class RunLoop:
    """One async workflow's loop: build it on the run's thread, then `drive()` its coroutine.

    Args:
        clock: The engine's clock (its waits count the workflow thread as blocked).
    """

    def __init__(self, clock: Clock) -> None:
        wake = clock.new_event()  # set by every thread-safe callback
        self.loop = _RunLoop(_ClockSelector(clock, wake), wake)

    @property
    def turns(self) -> int:
        """How many times the loop has waited for work (it moves on only between awaits)."""
        return self.loop.clock_selector.turns

    def drive(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` to its end on this loop, then close the loop; its value or error.

        Tasks the workflow left running are cancelled first (a sync workflow's stray threads
        have no such end; here they would never run again anyway).
        """
        loop = self.loop
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(coroutine)
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                asyncio.set_event_loop(None)
                loop.close()


def off_loop(clock: Clock, wait: Callable[[], T]) -> Coroutine[Any, Any, T]:
    """Run a blocking wait (a sleep, a signal wait) on a thread of its own; await its value."""

    async def waiting() -> T:
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = loop.create_future()

        def deliver(value: Any, error: BaseException | None) -> None:
            if not outcome.done():
                if error is None:
                    outcome.set_result(value)
                else:
                    outcome.set_exception(error)

        def work() -> None:
            clock.bind_participant()
            try:
                try:
                    result: tuple[Any, BaseException | None] = (wait(), None)
                except BaseException as exc:  # the workflow sees it where it awaits
                    result = (None, exc)
                with contextlib.suppress(RuntimeError):  # closed: the workflow ended meanwhile
                    loop.call_soon_threadsafe(deliver, *result)
            finally:
                clock.release_participant()

        clock.reserve_participant()
        context = contextvars.copy_context()  # output routing follows the cell
        thread = threading.Thread(target=context.run, args=(work,), daemon=True, name="weft-wait")
        try:
            thread.start()
        except BaseException:
            clock.release_participant()
            raise
        return await outcome

    return waiting()


async def settled(register: Callable[[Callable[[], None]], None]) -> None:
    """Wait on the running loop, never blocking it, until ``register``'s callback is called.

    ``register(callback)`` arranges for ``callback()`` to be called once, from any thread (at
    once when the thing has already happened): a step settling, a run finishing.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_finish, waiter)

    register(wake)
    await waiter


def _finish(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a waiter whose task was cancelled is done already
        waiter.set_result(None)
