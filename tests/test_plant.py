"""Plant model (host_tools.plant) and true-heat reference (host_tools.trueheat), CPython."""

import math

import pytest
from iapws import IAPWS97, iapws97

from host_tools import trueheat
from host_tools.plant import Plant, PlantParams

REUSE = {"reuse_relay": True, "cooler_inhibit_relay": True}
BYPASS = {"reuse_relay": False, "cooler_inhibit_relay": False}


def run(plant, seconds, dt_s=1.0, **inputs):
    for _ in range(int(round(seconds / dt_s))):
        plant.step(dt_s, **inputs)


def reuse_steady_plant():
    """24 h at 100 kW load and demand in reuse, from a cold-ish start."""
    plant = Plant(it_feed_c=32.0, tank_c=35.0, load_kw=100.0, demand_kw=100.0)
    run(plant, 24 * 3600, load_kw=100.0, demand_kw=100.0, **REUSE)
    return plant


@pytest.fixture(scope="module")
def reuse_plant():
    return reuse_steady_plant()


def from_reuse(settled):
    """A fresh plant in the settled reuse state (100 kW load and demand, valve at reuse)."""
    return Plant(it_feed_c=settled.it_coolant_c, tank_c=settled.tank_c, valve_position=1.0,
                 load_kw=100.0, demand_kw=100.0)


def test_reuse_steady_state(reuse_plant):
    plant = reuse_plant
    feed_c, tank_c = plant.it_coolant_c, plant.tank_c
    run(plant, 3600, load_kw=100.0, demand_kw=100.0, **REUSE)
    # Settled: less than 0.01 K drift over the last hour.
    assert abs(plant.it_coolant_c - feed_c) < 0.01
    assert abs(plant.tank_c - tank_c) < 0.01
    assert plant.valve_at_reuse is True
    assert plant.flow_m3h == pytest.approx(8.7)
    delta_k = plant.supply_c - plant.return_c
    assert 8.5 <= delta_k <= 11.5
    assert 38.0 <= plant.it_coolant_c <= 42.0
    assert 35.0 <= plant.tank_c <= 40.0
    assert plant.sink_return_c == plant.return_c == plant.tank_c
    assert plant.max_it_coolant_c < plant.params.it_coolant_limit_c
    # The building takes (almost) the whole load: only the small natural loss remains.
    assert 95.0 <= plant.q_hx_kw <= 100.0


def test_bypass_steady_state(reuse_plant):
    plant = from_reuse(reuse_plant)
    run(plant, 6 * 3600, load_kw=100.0, demand_kw=100.0, **BYPASS)
    assert plant.valve_at_reuse is False
    assert plant.it_coolant_c == pytest.approx(plant.params.dry_cooler_setpoint_c, abs=0.01)
    assert plant.supply_c - plant.return_c == 0.0
    assert plant.q_hx_kw == 0.0
    # The building keeps drawing: the tank cools towards the no-use temperature.
    assert plant.tank_c < reuse_plant.tank_c - 5.0


def test_energy_balance_over_an_hour():
    plant = Plant(it_feed_c=36.0, tank_c=33.0, load_kw=80.0, demand_kw=90.0)
    p = plant.params
    feed0_c, tank0_c = plant.it_coolant_c, plant.tank_c
    # A mixed hour: reuse, a fan-assisted spell, bypass, back to reuse, varying load.
    run(plant, 900, load_kw=80.0, demand_kw=90.0, **REUSE)
    run(plant, 600, load_kw=120.0, demand_kw=60.0, reuse_relay=True, cooler_inhibit_relay=False)
    run(plant, 900, load_kw=100.0, demand_kw=100.0, **BYPASS)
    run(plant, 1200, load_kw=90.0, demand_kw=110.0, **REUSE)
    assert plant.t_s == 3600.0

    stored_it_j = p.it_capacity_j_k * (plant.it_coolant_c - feed0_c)
    out_j = plant.heat_to_building_j_model + plant.dry_cooler_j_total + stored_it_j
    assert plant.load_j_total > 0.0
    assert abs(plant.load_j_total - out_j) <= 0.005 * plant.load_j_total

    stored_tank_j = p.tank_capacity_j_k * (plant.tank_c - tank0_c)
    tank_out_j = plant.building_draw_j_total + stored_tank_j
    assert abs(plant.heat_to_building_j_model - tank_out_j) <= 0.005 * plant.load_j_total

    # The log describes the same heat as the model's bookkeeping (cp-based) ...
    logged_j = sum(v * p.rho_kg_m3 * p.cp_j_kgk * (s - r) for _, _, v, s, r in plant.log)
    assert logged_j == pytest.approx(plant.heat_to_building_j_model, rel=1e-9)
    assert sum(rec[2] for rec in plant.log) == pytest.approx(plant.volume_m3_total, rel=1e-12)
    # ... and the IAPWS true heat agrees with the constant-cp model to well within 0.5 %.
    true_kwh = trueheat.true_heat_kwh(plant.log)
    assert true_kwh == pytest.approx(plant.heat_to_building_j_model / 3.6e6, rel=0.005)


def test_sink_lost_in_reuse_heats_the_it_loop(reuse_plant):
    plant = from_reuse(reuse_plant)
    plant.step(1.0, load_kw=100.0, demand_kw=100.0, building_pump_on=False, **REUSE)
    # The pump stop is latched: from now on no flow, no transfer.
    assert plant.flow_m3h == 0.0
    assert plant.q_hx_kw == 0.0
    assert plant.supply_c == plant.return_c
    vol0_m3, feed0_c = plant.volume_m3_total, plant.it_coolant_c
    run(plant, 300, load_kw=100.0, demand_kw=100.0, building_pump_on=False, **REUSE)
    assert plant.volume_m3_total == vol0_m3
    rate_k_s = (plant.it_coolant_c - feed0_c) / 300.0
    expected_k_s = 100e3 / plant.params.it_capacity_j_k
    assert rate_k_s == pytest.approx(expected_k_s, rel=0.1)
    # Left alone it would cross the over-temperature limit (the firmware must act).
    run(plant, 1800, load_kw=100.0, demand_kw=100.0, building_pump_on=False, **REUSE)
    assert plant.max_it_coolant_c > plant.params.it_coolant_limit_c


def test_valve_travel_and_end_switch():
    plant = Plant(load_kw=50.0, demand_kw=50.0)
    assert plant.valve_position == 0.0 and plant.valve_at_reuse is False
    inputs = {"load_kw": 50.0, "demand_kw": 50.0}
    plant.step(1.0, **inputs, **REUSE)
    assert plant.valve_position == pytest.approx(1.0 / 20.0)
    assert plant.valve_at_reuse is None
    run(plant, 18, **inputs, **REUSE)
    assert plant.valve_at_reuse is None
    plant.step(1.0, **inputs, **REUSE)
    assert plant.valve_position == 1.0 and plant.valve_at_reuse is True
    # Relay de-energised: spring return to bypass, same travel time.
    run(plant, 10, **inputs, **BYPASS)
    assert plant.valve_position == pytest.approx(0.5)
    assert plant.valve_at_reuse is None
    # A stuck valve stays where it is whatever the relay says.
    run(plant, 30, **inputs, **REUSE, valve_stuck=True)
    assert plant.valve_position == pytest.approx(0.5)
    run(plant, 30, **inputs, **BYPASS, valve_stuck=True)
    assert plant.valve_position == pytest.approx(0.5)
    run(plant, 10, **inputs, **BYPASS)
    assert plant.valve_position == 0.0 and plant.valve_at_reuse is False
    # Longer steps overshoot nothing.
    plant.step(60.0, **inputs, **REUSE)
    assert plant.valve_position == 1.0


def test_stuck_valve_at_reuse_with_fans_stays_below_the_limit(reuse_plant):
    # Sink lost, the firmware falls back to bypass (relays off), but the valve is stuck
    # at reuse: the dry cooler fans come back and carry the whole load.
    plant = from_reuse(reuse_plant)
    run(
        plant,
        4 * 3600,
        load_kw=100.0,
        demand_kw=100.0,
        building_pump_on=False,
        valve_stuck=True,
        **BYPASS,
    )
    assert plant.valve_position == 1.0 and plant.valve_at_reuse is True
    assert plant.max_it_coolant_c < plant.params.it_coolant_limit_c
    assert plant.it_coolant_c == pytest.approx(plant.params.dry_cooler_setpoint_c, abs=0.05)


def test_log_records_the_served_values():
    plant = Plant(it_feed_c=38.0, tank_c=36.0, valve_position=1.0, load_kw=100.0)
    served = []
    for i in range(120):
        served.append((plant.t_s, plant.flow_m3h, plant.supply_c, plant.return_c))
        # The pump toggles every 10 s: the record still matches what was read at t.
        plant.step(
            1.0, load_kw=100.0, demand_kw=100.0, building_pump_on=(i // 10) % 2 == 0, **REUSE
        )
    assert len(plant.log) == 120
    for (t_s, flow_m3h, supply_c, return_c), rec in zip(served, plant.log, strict=True):
        assert rec == (t_s, 1.0, flow_m3h * 1.0 / 3600.0, supply_c, return_c)
    assert plant.t_s == 120.0


def day_scenario():
    plant = Plant(it_feed_c=32.0, tank_c=35.0)
    for t in range(86400):
        load_kw = 70.0 + 30.0 * math.sin(t * 2.0 * math.pi / 86400.0)
        # Reuse while the building wants more than the load, bypass at night.
        demand_kw = 110.0 if 21600 <= t < 79200 else 40.0
        mode = REUSE if 21600 <= t < 79200 else BYPASS
        plant.step(1.0, load_kw=load_kw, demand_kw=demand_kw, **mode)
    return plant


def test_day_is_deterministic_and_fast_enough_to_run():
    a, b = day_scenario(), day_scenario()
    assert len(a.log) == 86400
    assert a.t_s == 86400.0
    assert a.log == b.log
    assert a.max_it_coolant_c == b.max_it_coolant_c < a.params.it_coolant_limit_c
    true_kwh = trueheat.true_heat_kwh(a.log)
    assert true_kwh == trueheat.true_heat_kwh(b.log)
    assert true_kwh == pytest.approx(a.heat_to_building_j_model / 3.6e6, rel=0.005)
    assert true_kwh > 500.0


def test_true_heat_hand_calculation():
    # One record: 2.5 l at 45 °C supply / 35 °C return, volume in the return leg.
    v_m3, ts_c, tr_c, p_mpa = 0.0025, 45.0, 35.0, 0.3
    sup = IAPWS97(T=273.15 + ts_c, P=p_mpa)
    ret = IAPWS97(T=273.15 + tr_c, P=p_mpa)
    expected_j = v_m3 * ret.rho * (sup.h - ret.h) * 1000.0
    log = [(0.0, 1.0, v_m3, ts_c, tr_c)]
    series = trueheat.true_heat_series(log, pressure_mpa=p_mpa)
    assert series[0] == pytest.approx(expected_j, rel=1e-12)
    assert trueheat.true_heat_kwh(log) == pytest.approx(expected_j / 3.6e6, rel=1e-12)
    # About 10 K × 4.18 kJ/(kg K) × 2.49 kg.
    assert 100e3 < expected_j < 106e3


def test_true_heat_properties_match_iapws_region1():
    temps_c = [0.5 + 0.0137 * i for i in range(0, 9000, 7)] + [39.999999999, 40.0]
    h_j_kg, rho_kg_m3 = trueheat.region1_h_rho(temps_c, 0.3)
    for t_c, h, rho in zip(temps_c, h_j_kg, rho_kg_m3, strict=True):
        ref = iapws97._Region1(273.15 + t_c, 0.3)
        assert h == pytest.approx(ref["h"] * 1000.0, rel=1e-14, abs=1e-9)
        assert rho == pytest.approx(1.0 / ref["v"], rel=1e-14)


def test_true_heat_edge_cases():
    assert trueheat.true_heat_kwh([]) == 0.0
    # No volume or no ΔΘ: no heat. Negative ΔΘ: negative heat (the meter may not).
    log = [(0.0, 1.0, 0.0, 45.0, 35.0), (1.0, 1.0, 0.002, 35.0, 35.0)]
    assert list(trueheat.true_heat_series(log)) == [0.0, 0.0]
    assert trueheat.true_heat_series([(0.0, 1.0, 0.002, 35.0, 45.0)])[0] < 0.0
    # Identical inputs give identical results wherever they sit in the log.
    log = [(float(i), 1.0, 0.0024, 44.0 + i % 3, 34.0) for i in range(9)]
    series = trueheat.true_heat_series(log)
    assert series[0] == series[3] == series[6]
    with pytest.raises(ValueError):
        trueheat.true_heat_kwh([(0.0, 1.0, 0.002, 140.0, 35.0)])  # steam at 0.3 MPa


def test_params_are_documented_defaults():
    p = PlantParams()
    assert p.it_flow_kg_s == 2.39
    assert p.it_capacity_j_k == 9.0e6
    assert p.valve_travel_s == 20.0
    assert p.hx_effectiveness == 0.8
    assert p.dry_cooler_setpoint_c == 32.0
    assert p.dry_cooler_max_kw == 250.0
    assert p.building_flow_m3h == 8.7
    assert p.tank_capacity_j_k == 4.2e7
    assert p.it_coolant_limit_c == 50.0
    # 100 kW at 10 K on both loops.
    assert p.it_flow_kg_s * p.cp_j_kgk * 10.0 == pytest.approx(100e3, rel=0.01)
    bldg_w_k = p.building_flow_m3h / 3600.0 * p.rho_kg_m3 * p.cp_j_kgk
    assert bldg_w_k * 10.0 == pytest.approx(100e3, rel=0.01)
    with pytest.raises(ValueError):
        Plant().step(0.0, load_kw=0.0, demand_kw=0.0, **BYPASS)
