"""Which error a failed job reports.

anyio task groups raise (nested) exception groups: one real failure plus the
cancellations it caused in its siblings. A caller wants the failure, typed,
not a group and not a cancellation.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import AsyncregError, CopyError, Interrupted

__all__ = ["most_useful"]


def most_useful(error: BaseException) -> BaseException:
    """The first real failure inside (nested) exception groups, not a cancellation."""
    leaves = list(_leaves(error))
    # A real failure says more than the interruptions a stopping job collects.
    for leaf in leaves:
        if isinstance(leaf, AsyncregError) and not isinstance(leaf, Interrupted):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, Interrupted):
            return leaf
    # Cancellations are BaseExceptions, not Exceptions: this skips them without asking
    # anyio, which needs a running event loop (this also runs after it has ended).
    for leaf in leaves:
        if isinstance(leaf, Exception):
            return leaf
    return CopyError("copy failed", [e for e in leaves if isinstance(e, Exception)])


def _leaves(error: BaseException) -> Sequence[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in error.exceptions:
            out.extend(_leaves(inner))
        return out
    return [error]
