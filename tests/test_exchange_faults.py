"""Fault spec parsing, seeded fault decisions, and the rate limiter's 429 -> 418 ban (pure)."""
import pytest

from daemons.tools.exchange import errors, faults
from daemons.tools.exchange.ratelimit import RateLimiter, weight


def test_faults_spec_parses_documented_example():
    spec = faults.parse("latency_ms=20,http5xx=0.01,unknown503=0.05,timeout=0.02,r429=0.01,"
                        "ws_drop=0.001,listenkey_expire_s=60,seed=3")
    assert (spec.latency_ms, spec.http5xx, spec.unknown503, spec.seed) == (20.0, 0.01, 0.05, 3)
    assert spec.listenkey_expire_s == 60.0 and spec.weight_limit == 2400


@pytest.mark.parametrize("bad", ["nope=1", "http5xx=2", "latency_ms=x", "seed"])
def test_faults_spec_bad_item_is_one_clear_error(bad):
    with pytest.raises(ValueError) as exc:
        faults.parse(bad)
    assert "\n" not in str(exc.value)


def test_faults_same_seed_same_decisions():
    spec = faults.parse("http5xx=0.2,r429=0.1,unknown503=0.3,timeout=0.1,seed=3")
    a, b = faults.FaultPlan(spec), faults.FaultPlan(spec)
    seq_a = [(a.rest(), a.order()) for _ in range(300)]
    seq_b = [(b.rest(), b.order()) for _ in range(300)]
    assert seq_a == seq_b
    assert {x for x, _ in seq_a} >= {None, "r429"} and "unknown503" in {y for _, y in seq_a}
    other = faults.FaultPlan(faults.parse("http5xx=0.2,r429=0.1,unknown503=0.3,timeout=0.1,seed=4"))
    assert [(other.rest(), other.order()) for _ in range(300)] != seq_a


def test_ratelimit_429_then_418_ban_with_retry_after():
    rl = RateLimiter(weight_limit=10, ban_after=2, ban_s=90)
    now = 60_000 * 100
    for _ in range(10):
        rl.request("ip", 1, now)
    codes = []
    for _ in range(4):
        with pytest.raises(errors.ApiError) as exc:
            rl.request("ip", 1, now)
        codes.append(exc.value.status)
        assert int(exc.value.headers["Retry-After"]) >= 1
    assert codes == [429, 429, 418, 418]
    with pytest.raises(errors.ApiError) as exc:
        rl.request("ip", 1, now + 80_000)               # still banned in the next minute
    assert exc.value.status == 418
    assert rl.request("ip", 1, now + 91_000) == 1


def test_ratelimit_order_count_limit_is_per_ten_seconds_and_minute():
    rl = RateLimiter(order_limit=5, order_limit_10s=3)
    assert [rl.order("k", 0) for _ in range(3)] == [(1, 1), (2, 2), (3, 3)]
    with pytest.raises(errors.ApiError) as exc:
        rl.order("k", 1)
    assert exc.value.code == -1015 and exc.value.status == 429
    assert weight("GET", "/fapi/v1/openOrders", {}) == 40
    assert weight("GET", "/fapi/v1/depth", {"limit": "1000"}) == 20
