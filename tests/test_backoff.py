import random

import pytest

from trio_mcp import BackoffPolicy, ConfigError


def test_default_schedule_is_grpc_connection_backoff() -> None:
    policy = BackoffPolicy()
    assert (policy.initial, policy.multiplier, policy.cap, policy.jitter) == (1.0, 1.6, 120.0, 0.2)
    bases = [policy.base_delay(n) for n in range(13)]
    # 1 s x 1.6 per retry, capped at 120 s.
    expected = [1.0, 1.6, 2.56, 4.096, 6.5536, 10.48576, 16.777216, 26.8435456, 42.94967296]
    expected += [68.719476736, 109.9511627776, 120.0, 120.0]
    assert bases == pytest.approx(expected, rel=1e-12)
    assert policy.base_delay(1000) == 120.0  # capped, without overflowing
    with pytest.raises(ValueError, match="attempt"):
        policy.base_delay(-1)


def test_seeded_jitter_is_exact_and_within_bounds() -> None:
    policy = BackoffPolicy()
    rng = random.Random(7)
    delays = [policy.delay(n, rng) for n in range(6)]
    # Seed 7's schedule, pinned as literals: any change of the formula shows up here.
    assert delays == pytest.approx(
        [
            0.929533105933265,
            1.3765434713116813,
            2.714556900392811,
            3.395479612076103,
            6.64766252136973,
            9.92241848696213,
        ],
        rel=1e-12,
    )
    for n, delay in enumerate(delays):
        assert 0.8 * policy.base_delay(n) <= delay <= 1.2 * policy.base_delay(n)


def test_without_jitter_the_schedule_is_the_base() -> None:
    policy = BackoffPolicy(jitter=0)
    assert [policy.delay(n, random.Random(0)) for n in range(4)] == [
        1.0,
        1.6,
        2.5600000000000005,
        4.096000000000001,
    ]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"initial": -1}, "backoff.initial"),
        ({"multiplier": 0.5}, "backoff.multiplier"),
        ({"initial": 10, "cap": 5}, "backoff.cap"),
        ({"jitter": 1.5}, "backoff.jitter"),
    ],
)
def test_invalid_policy_names_the_key(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        BackoffPolicy(**kwargs)
    assert info.value.key == key
