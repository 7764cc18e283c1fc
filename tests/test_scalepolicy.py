"""The autoscaler's control law (shop/cluster/scalepolicy.py) on its own: given
requests in flight over time, when it scales, how far, and when it holds.

A simulated clock drives it the way the autoscaler does (a sample and a
decision every half second; a decision applied at once), so each rule of the
module's docstring is checked against a load shaped to trip it.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest

from shop.cluster.scalepolicy import SAMPLE_INTERVAL, Controller, Decision, Policy

POLICY = Policy(1, 4)  # target 4, window 3 s, down window 15 s, cooldown 10 s, band 0.7


def simulate(
    load: Callable[[float], float], seconds: float, replicas: int, policy: Policy = POLICY
) -> list[tuple[float, Decision]]:
    """Run the controller for `seconds` of load(t) requests in flight, starting with
    `replicas`; every decision is applied at once. Return (time, decision) pairs."""
    controller = Controller(policy)
    decisions = []
    for step in itertools.count():
        now = step * SAMPLE_INTERVAL
        if now > seconds:
            return decisions
        controller.observe(now, load(now))
        decision = controller.step(now, replicas)
        if decision is not None:
            decisions.append((now, decision))
            replicas = decision.to
            controller.changed(now)


def test_a_load_at_the_target_with_noise_never_scales():
    noise = random.Random(7)
    # 2 replicas carrying 6 to 7 in flight: up above 8, down only at 2.8 or less.
    decisions = simulate(lambda t: 6.5 + noise.uniform(-0.5, 0.5), 300, replicas=2)
    assert decisions == []


def test_a_load_that_jumps_scales_up_within_a_window_at_most_doubling():
    wide = Policy(1, 8)
    decisions = simulate(lambda t: 24.0 if t >= 10 else 1.0, 40, replicas=1, policy=wide)
    (first_at, first), (second_at, second), (third_at, third) = decisions
    # The 3-s mean crosses the target at once (one sample of 24 among 1s).
    assert first.action == "up" and (first.replicas, first.to) == (1, 2)
    assert 10 <= first_at <= 10 + wide.window
    assert "per replica > target 4: 2 replicas needed" in first.reason
    # The next decision reads the new cluster only: a whole window after the change;
    # 6 are needed, at most double at once.
    assert (second.replicas, second.to) == (2, 4)
    assert second_at - first_at >= wide.window
    assert second.reason == (
        "24.0 requests in flight over 3 s, 12.0 per replica > target 4: "
        "6 replicas needed; at most double at once, so 4"
    )
    assert (third.replicas, third.to) == (4, 6) and third_at - second_at >= wide.window


def test_scale_down_waits_for_a_whole_calm_window_then_goes_one_at_a_time():
    decisions = simulate(lambda t: 12.0 if t < 20 else 0.5, 120, replicas=3)
    downs = [(at, d) for at, d in decisions if d.action == "down"]
    assert [(d.replicas, d.to) for _, d in downs] == [(3, 2), (2, 1)]
    assert downs[0][0] >= 20 + POLICY.down_window
    assert downs[1][0] - downs[0][0] >= POLICY.cooldown


def test_one_spike_inside_the_window_holds_the_scale_down():
    def load(t: float) -> float:
        return 12.0 if 40 <= t < 44 else 1.0  # one 4-s burst in a calm minute

    decisions = simulate(load, 70, replicas=3)
    downs = [at for at, d in decisions if d.action == "down"]
    # Calm from the start: a scale-down at 15 s; then the burst (and its window
    # of readings) holds the next one until 15 s after the burst's end.
    assert downs[0] == pytest.approx(POLICY.down_window, abs=1)
    assert not [at for at in downs if 40 <= at < 44 + POLICY.down_window]


def test_scale_down_leaves_room_below_the_target_so_it_does_not_flap():
    # 5.2 in flight on 2 replicas: one replica could carry it within its target
    # of 4? No (5.2 > 4); within 70 %? No. So it stays at 2, reading after reading.
    assert simulate(lambda t: 5.2, 120, replicas=2) == []
    # 2.6 in flight: within 70 % of one replica's target (2.8): down to 1, and
    # then 2.6 on 1 replica is under the target: it stays there.
    decisions = simulate(lambda t: 2.6, 120, replicas=2)
    assert [(d.replicas, d.to) for _, d in decisions] == [(2, 1)]


def test_a_load_hovering_around_one_replicas_target_scales_up_once_and_stays():
    # 3.4 to 4.6 in flight, a 38-s wave: above one replica's target half the time,
    # never near what one replica fewer than 2 may carry (2.8). Without the band
    # it would go 1, 2, 1, 2...
    decisions = simulate(lambda t: 4.0 + 0.6 * math.sin(t / 6), 400, replicas=1)
    assert [(d.replicas, d.to) for _, d in decisions] == [(1, 2)]


def test_outside_the_range_it_moves_in_at_once_without_a_reading():
    assert Controller(POLICY).step(0.0, 0) == Decision("up", 0, 1, "below the minimum of 1", None)
    assert Controller(POLICY).step(0.0, 6).to == 4
    assert Controller(POLICY).step(0.0, 2) is None  # in range, nothing read yet


def test_no_reading_without_samples_from_nginx():
    controller = Controller(POLICY)
    controller.observe(0.0, 30.0)
    assert controller.step(10.0, 1) is None  # the one sample is 10 s old: nginx went silent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4", "expected MIN:MAX"),
        ("a:b", "expected MIN:MAX"),
        ("-1:3", "expected MIN:MAX"),
        ("0:3", "1 <= MIN <= MAX"),
        ("3:2", "1 <= MIN <= MAX"),
        ("1:33", "at most 32"),
    ],
)
def test_bad_ranges_say_what_is_expected(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        Policy.parse(text)


def test_a_range_and_a_target_round_trip_through_the_state_file():
    policy = Policy.parse(" 2:5 ", target=6)
    assert (policy.minimum, policy.maximum, policy.target) == (2, 5, 6)
    assert Policy.from_dict(policy.to_dict()) == policy
    assert policy.describe() == "2 to 5 replicas, target 6 requests in flight per replica"
    assert not math.isnan(policy.band)
