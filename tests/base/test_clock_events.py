"""`RealClock.new_event()`: a ``threading.Event`` built more cheaply, behaving as one."""

from __future__ import annotations

import threading

from weft_nb.base.clock import RealClock


def test_a_real_clock_event_starts_unset_times_out_and_wakes_a_waiter_on_another_thread() -> None:
    clock = RealClock()
    event = clock.new_event()
    assert isinstance(event, threading.Event)
    assert not event.is_set()
    assert not clock.wait(event, 0.01)  # unset: the wait times out

    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(clock.wait(event, 10)))
    waiter.start()
    event.set()
    waiter.join(10)
    assert woke == [True]
    assert event.wait(0)  # set: at once

    event.clear()
    assert not event.is_set()
    assert not event.wait(0.01)


def test_the_cheaper_event_keeps_exactly_the_state_of_this_pythons_event() -> None:
    """`_Event` sets ``_cond`` and ``_flag`` itself; a Python whose Event keeps other state gets
    plain events (`_EVENT_LAYOUT_KNOWN`), never a half-built one."""
    plain, cheap = vars(threading.Event()), vars(RealClock().new_event())
    assert set(cheap) == set(plain)
