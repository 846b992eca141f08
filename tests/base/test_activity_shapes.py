"""What an activity function may look like: ``(input)`` or ``(input, ctx)``, checked at decoration.

A second positional parameter always receives the ``ActivityContext``, so one with a default (a
setting meant to keep its value) is refused when the function is decorated, not three failed
attempts later. A type checker cannot see it: such a function also fits ``Callable[[In], R]``.
"""

from __future__ import annotations

import pytest

import weft_nb


def test_a_second_parameter_with_a_default_is_refused_at_decoration() -> None:
    def scaled(value: float, factor: float = 2.0) -> float:
        return value * factor

    with pytest.raises(TypeError, match=r"'factor' has a default.*keyword-only"):
        weft_nb.activity(scaled)


def test_a_keyword_only_setting_and_an_optional_context_are_accepted() -> None:
    @weft_nb.activity
    def scaled(value: float, *, factor: float = 2.0) -> float:
        return value * factor

    @weft_nb.activity
    def with_context(value: int, ctx: weft_nb.ActivityContext | None = None) -> int:
        return value

    assert scaled(1.0) == 2.0
    assert with_context(3) == 3
