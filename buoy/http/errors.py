"""The one table from an error's kind to the HTTP status Consul answers it with."""

from __future__ import annotations

from buoy.core.errors import (
    Conflict,
    Error,
    Failed,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
)

STATUS: dict[type[Error], int] = {
    Invalid: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    RateLimited: 429,
    Unavailable: 500,
    Failed: 500,
}


def status_of(error: Error) -> int:
    """The status of the nearest kind in ``error``'s class hierarchy (a subclass keeps its kind's)."""
    for cls in type(error).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500
