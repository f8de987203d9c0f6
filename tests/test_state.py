import pytest

from trio_mcp import Freshness, ServerStatus
from trio_mcp._state import freshness_of, next_status

H, D, U, R, K = (
    ServerStatus.HEALTHY,
    ServerStatus.DEGRADED,
    ServerStatus.UNREACHABLE,
    ServerStatus.RECOVERED,
    ServerStatus.UNKNOWN,
)


@pytest.mark.parametrize(
    "current, success, failures, expected",
    [
        (K, True, 0, H),
        (H, True, 0, H),
        (H, False, 1, D),
        (D, False, 2, D),
        (D, False, 3, U),
        (U, False, 9, U),
        (D, True, 0, R),
        (U, True, 0, R),
        (R, True, 0, H),
        (R, False, 1, D),
        (K, False, 3, U),
    ],
)
def test_status_transitions(
    current: ServerStatus, success: bool, failures: int, expected: ServerStatus
) -> None:
    assert (
        next_status(current, success=success, consecutive_failures=failures, unreachable_threshold=3)
        is expected
    )


def test_auth_required_never_unreachable() -> None:
    status = next_status(
        D, success=False, consecutive_failures=50, unreachable_threshold=3, category="auth_required"
    )
    assert status is D


def test_freshness() -> None:
    assert freshness_of(None, 100, 10) is Freshness.UNKNOWN
    assert freshness_of(95, 100, 10) is Freshness.ACTIVE_RECENT
    assert freshness_of(90, 100, 10) is Freshness.ACTIVE_RECENT
    assert freshness_of(89.9, 100, 10) is Freshness.STALE
