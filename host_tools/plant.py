"""Deterministic plant model of a heatgw site, for the host simulation harness (CPython).

Topology (one lumped node per loop, water with constant cp/ρ in the model)::

      +------------------------- IT load loop (it_flow_kg_s, fixed pump) ----------------+
      |                                                                                   |
    [servers +load_kw]  hot = feed + load/(m·cp)                                          |
      |                                                                                   |
    diverting valve (reuse relay, travel valve_travel_s, spring return to bypass)         |
      |-- fraction = position --> [HX hot side] --+                                       |
      |-- 1 - position (bypass) -------------------+--> mixed --> [dry cooler] --> feed --+
                                   |                            fans: own thermostat to
                                   | q_hx (counterflow,         dry_cooler_setpoint_c, up to
                                   |  ε on C_min)               dry_cooler_max_kw, held off
                                   v                            by the cooler_inhibit relay
      building loop (building_flow_m3h, pump may be off)        (then natural loss only)
        tank_c --(meter return / sink_return, flow sensor)--> [HX cold side] --> supply_c
          ^                                                                         |
          +---------------- buffer tank (draws demand_kw for the building) <--------+

* IT loop: one lumped temperature `it_feed_c` (the coolant feed to the servers = the
  `it_coolant` sensor) with heat capacity `it_capacity_j_k`. Hot side = feed + load/(m·cp).
* Valve: linear position 0 (bypass) .. 1 (reuse), moving at 1/valve_travel_s per second
  towards its command while the reuse relay powers the actuator (the command: 1, or the
  node's 0-10 V output as a fraction, `valve_cmd`), towards 0 (spring return) while it
  does not; `valve_stuck` freezes it. End switch `valve_at_reuse`: True at 1, False at 0,
  None in between. Its position feedback (4-20 mA, 0-10 V) is the harness's (world.py).
* Building loop pressure (`loop_pressure_bar`): the static fill pressure, which a leak
  lowers (set_fill(), optionally as a ramp), plus the pump's head while it runs. The
  buffer tank's level (`tank_level_pct`) is constant unless set. Both are served values,
  as seen by pressure and level transmitters (world.py).
* Heat exchanger: q_hx = ε · C_min · (hot − tank_c), C_min = min(position · C_it, C_bldg),
  only while the building pump runs. The HX branch's outlet mixes with the bypass branch.
* Dry cooler in series after valve/HX: natural loss UA·(mixed − ambient) always; with fans
  allowed (cooler_inhibit de-energised) the fans add what brings the coolant down to the
  setpoint, capped at dry_cooler_max_kw. So in `reuse` (both relays energised) only the
  building takes the heat; in `bypass` (both de-energised) the dry cooler does, and a valve
  stuck at reuse stays safe because the fans come back.
* Building: one lumped buffer tank `tank_c`. The HX heats the building flow from tank_c
  (meter return = sink_return = HX inlet, cold leg; flow sensor in that leg) to supply_c
  (HX outlet, hot leg), which returns to the tank. The building draws demand_kw from the
  tank at tank_c >= demand_full_c, proportionally less down to nothing at demand_zero_c.
  The harness owns the building's `sink_available` signal; the plant only has the pump.

Design point (defaults): 100 kW load, 100 kW demand, reuse: the building ΔΘ is ≈ 9.8 K,
it_feed settles ≈ 40 °C, the tank ≈ 37.8 °C (where the draw balances the heat).
Bypass: the fans hold it_feed at 32 °C, building ΔΘ 0.

Time: explicit Euler with zero-order hold. `step(dt_s, ...)` first records the values
served during [t, t+dt) — the current state, i.e. exactly what the sensor properties
returned before the call — and integrates over [t, t+dt) with those same values, then
advances. The disturbances `load_kw`, `demand_kw` and `building_pump_on` are plant state
latched at the end of the step (they act from t+dt): the served supply temperature and
flow depend on load and pump, and the firmware sampled them at t, so the log, the model's
own energy bookkeeping and the firmware's samples all describe the same interval. The
relays and `valve_stuck` act during the step (they only move the valve / switch fans,
which no served value depends on at t). Intended for dt_s up to ~60 s (time constants
are ≥ 900 s); the harness steps 1 s.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class PlantParams:
    """Plant parameters. Units are in the names (_kg_s, _j_k, _m3h, _kw, _c, _s, ...)."""

    cp_j_kgk: float = 4180.0  # model water heat capacity (≈ 37 °C)
    rho_kg_m3: float = 993.0  # model water density (≈ 37 °C)
    it_flow_kg_s: float = 2.39  # fixed IT pump: 100 kW at 10 K
    it_capacity_j_k: float = 9.0e6  # ~2 m³ water + metal
    it_coolant_limit_c: float = 50.0  # over-temperature limit (checked by the harness)
    valve_travel_s: float = 20.0  # full stroke time of the diverting valve
    hx_effectiveness: float = 0.8  # counterflow HX effectiveness, on C_min
    dry_cooler_setpoint_c: float = 32.0  # fan thermostat: coolant out of the cooler
    dry_cooler_max_kw: float = 250.0  # fan capacity
    dry_cooler_natural_w_k: float = 100.0  # natural loss with fans off (UA)
    ambient_c: float = 20.0
    building_flow_m3h: float = 8.7  # building pump: 100 kW at ΔΘ 10 K
    tank_capacity_j_k: float = 4.2e7  # ~10 m³ water
    demand_full_c: float = 38.0  # tank temperature from which the full demand is drawn
    demand_zero_c: float = 28.0  # below this the building draws nothing useful
    loop_fill_bar: float = 1.5  # building loop: static (fill) pressure
    pump_head_bar: float = 0.4  # added while the building pump runs
    tank_level_pct: float = 80.0  # buffer tank level
    tank_height_m: float = 2.0  # its height (a level transmitter in metres)


class Plant:
    """Lumped plant; see the module docstring. Sensors are properties of the state."""

    def __init__(
        self,
        params=None,
        *,
        it_feed_c=32.0,
        tank_c=35.0,
        valve_position=0.0,
        load_kw=0.0,
        demand_kw=0.0,
        building_pump_on=True,
        t_s=0.0,
    ):
        p = params if params is not None else PlantParams()
        if not 0.0 <= valve_position <= 1.0:
            raise ValueError("valve_position must be within 0..1")
        if p.demand_full_c <= p.demand_zero_c:
            raise ValueError("demand_full_c must be above demand_zero_c")
        self.params = p
        # Constants hoisted out of step() (it runs 86,400 times per simulated day).
        self._c_it_w_k = p.it_flow_kg_s * p.cp_j_kgk
        self._c_bldg_w_k = p.building_flow_m3h / 3600.0 * p.rho_kg_m3 * p.cp_j_kgk
        self._ua_w_k = p.dry_cooler_natural_w_k
        self._fan_max_w = p.dry_cooler_max_kw * 1000.0
        self._demand_span_k = p.demand_full_c - p.demand_zero_c

        # State.
        self.t_s = float(t_s)
        self.it_feed_c = float(it_feed_c)
        self._tank_c = float(tank_c)
        self._valve_pos = float(valve_position)
        self.load_kw = float(load_kw)
        self.demand_kw = float(demand_kw)
        self.building_pump_on = bool(building_pump_on)
        self.fill_bar = p.loop_fill_bar
        self._fill_target = self.fill_bar
        self._fill_rate_bar_s = 0.0  # a leak's ramp towards the target (0: none)
        self.tank_level_pct = p.tank_level_pct

        # Counters and bookkeeping.
        self.volume_m3_total = 0.0
        self.max_it_coolant_c = self.it_feed_c
        self.heat_to_building_j_model = 0.0  # Σ q_hx·dt (cp-based, this model's own)
        self.load_j_total = 0.0  # Σ load·dt
        self.dry_cooler_j_total = 0.0  # Σ (natural + fans)·dt
        self.building_draw_j_total = 0.0  # Σ heat drawn from the tank by the building
        self.log = []  # (t_s, dt_s, volume_m3, supply_c, return_c) per step
        self._serve()

    # -- served values (functions of the state only) ---------------------------------

    def _serve(self):
        """Algebraic part: HX duty, hot side, supply, from the state at t."""
        c_it = self._c_it_w_k
        hot_c = self.it_feed_c + self.load_kw * 1000.0 / c_it
        tank_c = self._tank_c
        pos = self._valve_pos
        if self.building_pump_on and pos > 0.0:
            c_bldg = self._c_bldg_w_k
            c_hx = pos * c_it
            c_min = c_hx if c_hx < c_bldg else c_bldg
            q_hx_w = self.params.hx_effectiveness * c_min * (hot_c - tank_c)
            self._supply_c = tank_c + q_hx_w / c_bldg
        else:
            q_hx_w = 0.0
            self._supply_c = tank_c  # no flow through the HX: no transfer
        self._q_hx_w = q_hx_w
        self._mixed_c = hot_c - q_hx_w / c_it
        self._flow_m3h = self.params.building_flow_m3h if self.building_pump_on else 0.0

    @property
    def supply_c(self):
        """Meter supply (HX outlet, hot leg of the building loop)."""
        return self._supply_c

    @property
    def return_c(self):
        """Meter return (HX inlet = tank, cold leg)."""
        return self._tank_c

    @property
    def sink_return_c(self):
        """Control sensor at the same point as the meter return."""
        return self._tank_c

    @property
    def it_coolant_c(self):
        """IT coolant feed to the servers."""
        return self.it_feed_c

    @property
    def tank_c(self):
        return self._tank_c

    @property
    def flow_m3h(self):
        """Building loop volume flow at the meter (return leg)."""
        return self._flow_m3h

    @property
    def valve_position(self):
        """0 = bypass, 1 = reuse (coolant through the HX)."""
        return self._valve_pos

    @property
    def valve_at_reuse(self):
        """End switch feedback: True at reuse, False at bypass, None while travelling."""
        pos = self._valve_pos
        if pos >= 1.0:
            return True
        if pos <= 0.0:
            return False
        return None

    @property
    def loop_pressure_bar(self):
        """Building loop pressure: fill plus the pump's head while it runs."""
        return self.fill_bar + (self.params.pump_head_bar if self.building_pump_on else 0.0)

    def set_fill(self, bar, ramp_s=0.0):
        """The loop's fill pressure goes to `bar`: at once, or linearly over ramp_s (a
        leak), one plant step at a time."""
        self._fill_target = float(bar)
        if ramp_s and ramp_s > 0:
            self._fill_rate_bar_s = abs(self._fill_target - self.fill_bar) / ramp_s
        else:
            self._fill_rate_bar_s = 0.0
            self.fill_bar = self._fill_target

    @property
    def hot_c(self):
        """IT coolant leaving the servers (before the valve)."""
        return self.it_feed_c + self.load_kw * 1000.0 / self._c_it_w_k

    @property
    def q_hx_kw(self):
        return self._q_hx_w / 1000.0

    # -- dynamics --------------------------------------------------------------------

    def step(
        self,
        dt_s,
        *,
        load_kw,
        demand_kw,
        reuse_relay,
        cooler_inhibit_relay,
        building_pump_on=True,
        valve_stuck=False,
        valve_cmd=1.0,
    ):
        """Record the values served during [t, t+dt), integrate over it, advance to t+dt."""
        if not dt_s > 0.0:
            raise ValueError("dt_s must be > 0")
        p = self.params
        supply_c = self._supply_c
        return_c = tank_c = self._tank_c
        volume_m3 = self._flow_m3h * dt_s / 3600.0
        self.log.append((self.t_s, dt_s, volume_m3, supply_c, return_c))

        # IT loop: load in, HX and dry cooler out (all from the state at t).
        q_hx_w = self._q_hx_w
        mixed_c = self._mixed_c
        q_dc_w = self._ua_w_k * (mixed_c - p.ambient_c)
        if not cooler_inhibit_relay:
            # Fans top up the natural loss to reach the setpoint at the cooler outlet.
            fan_w = self._c_it_w_k * (mixed_c - p.dry_cooler_setpoint_c) - q_dc_w
            if fan_w > self._fan_max_w:
                fan_w = self._fan_max_w
            if fan_w > 0.0:
                q_dc_w += fan_w
        load_w = self.load_kw * 1000.0
        self.it_feed_c += dt_s * (load_w - q_hx_w - q_dc_w) / p.it_capacity_j_k

        # Building: HX in, the building's draw out.
        frac = (tank_c - p.demand_zero_c) / self._demand_span_k
        if frac > 1.0:
            frac = 1.0
        elif frac < 0.0:
            frac = 0.0
        draw_w = self.demand_kw * 1000.0 * frac
        self._tank_c = tank_c + dt_s * (q_hx_w - draw_w) / p.tank_capacity_j_k

        # Valve actuator: to its command while the reuse relay powers it, spring return
        # to bypass when the relay is de-energised.
        if not valve_stuck:
            pos = self._valve_pos
            move = dt_s / p.valve_travel_s
            target = min(max(float(valve_cmd), 0.0), 1.0) if reuse_relay else 0.0
            if pos < target:
                pos = target if pos + move >= target - 1e-9 else pos + move
            elif pos > target:
                pos = target if pos - move <= target + 1e-9 else pos - move
            self._valve_pos = pos
        # A leak: the fill pressure ramps towards its target.
        if self._fill_rate_bar_s:
            d = self._fill_target - self.fill_bar
            step = self._fill_rate_bar_s * dt_s
            if abs(d) <= step:
                self.fill_bar = self._fill_target
                self._fill_rate_bar_s = 0.0
            else:
                self.fill_bar += step if d > 0 else -step

        # Bookkeeping over [t, t+dt).
        self.volume_m3_total += volume_m3
        self.heat_to_building_j_model += q_hx_w * dt_s
        self.load_j_total += load_w * dt_s
        self.dry_cooler_j_total += q_dc_w * dt_s
        self.building_draw_j_total += draw_w * dt_s
        if self.it_feed_c > self.max_it_coolant_c:
            self.max_it_coolant_c = self.it_feed_c

        # Latched disturbances act from t+dt (see the module docstring).
        self.load_kw = float(load_kw)
        self.demand_kw = float(demand_kw)
        self.building_pump_on = bool(building_pump_on)
        self.t_s += dt_s
        self._serve()
