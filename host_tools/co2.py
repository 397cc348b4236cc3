"""Avoided CO₂ for the commissioning report: from metered heat only, every factor from
configuration with its source, year and calorific basis (README, "The commissioning
report").

    factors = load_factors(path)           # None: the default set below
    co2 = avoided(heat_kwh, pump_kwh, factors)

The heat the loop delivered would otherwise have come from the building's boiler:
fuel = heat / η_boiler, CO₂e = fuel × EF_fuel, with η and EF on the same calorific basis
(gross or net: mixing them errs by ~10 % for natural gas). The loop's own pumps and
controls (a Modbus meter of role `pump`) use electricity: × EF_electricity, subtracted for
the net figure. The result is an estimate (a boiler that did not run is not measured) and
is labelled so; its input, the heat, is the node's metered energy and nothing else.

The default set (UK Government GHG Conversion Factors for Company Reporting 2023, DESNZ;
the boiler efficiency floor of the EU ecodesign regulation for space heaters, which the
UK retained) is for a site that has no better figures: a site should put its own boiler's
seasonal efficiency (its product fiche) and its country's current factors in a file.
"""

import json

BASES = ("gross", "net")

# Published figures, cited; nothing here is invented. DESNZ 2023, "Fuels" > "Gaseous
# fuels" > "Natural gas", kWh (Gross CV): 0.18293 kg CO2e per kWh (0.18256 of it CO2);
# kWh (Net CV): 0.20267. "UK electricity" > "Electricity generated": 0.20707 kg CO2e per
# kWh (scope 2, without transmission and distribution losses).
DEFAULT_FACTORS = {
    "name": "default: UK DESNZ 2023 conversion factors, EU ecodesign boiler efficiency floor",
    "fuel": {
        "name": "natural gas",
        "emission_factor": {
            "value": 0.18293, "unit": "kg CO2e/kWh", "basis": "gross", "year": 2023,
            "source": "UK Government GHG Conversion Factors for Company Reporting 2023 "
                      "(DESNZ, published 2023-06, v1.1): Fuels, Gaseous fuels, Natural gas, "
                      "kWh (Gross CV), kg CO2e; "
                      "https://www.gov.uk/government/collections/"
                      "government-conversion-factors-for-company-reporting"},
        "boiler_efficiency": {
            "value": 0.86, "unit": "1", "basis": "gross", "year": 2013,
            "source": "Commission Regulation (EU) No 813/2013 (ecodesign, space heaters), "
                      "Annex II 1(a): seasonal space heating energy efficiency of fuel boiler "
                      "space heaters <= 70 kW at least 86 % from 2015-09-26, on gross "
                      "calorific value; the regulatory floor, use the site boiler's own "
                      "fiche value where known"},
    },
    "electricity": {
        "emission_factor": {
            "value": 0.20707, "unit": "kg CO2e/kWh", "year": 2023,
            "source": "UK Government GHG Conversion Factors for Company Reporting 2023 "
                      "(DESNZ): UK electricity, Electricity generated, kWh, kg CO2e (scope "
                      "2, without T&D losses)"},
    },
}


class FactorError(ValueError):
    """A factor file that is not usable; the text names the key."""


def _factor(d, where, need_basis, lo, hi):
    if not isinstance(d, dict):
        raise FactorError(f"{where}: must be an object with value, source, year")
    v = d.get("value")
    if type(v) not in (int, float) or not lo < v <= hi:
        raise FactorError(f"{where}.value: {v!r} is not a number in ({lo}, {hi}]")
    src = d.get("source")
    if not isinstance(src, str) or len(src.strip()) < 8:
        raise FactorError(f"{where}.source: name the published source (who, what, which "
                          "table)")
    y = d.get("year")
    if type(y) is not int or not 1990 <= y <= 2100:
        raise FactorError(f"{where}.year: {y!r} is not a year")
    if need_basis and d.get("basis") not in BASES:
        raise FactorError(f"{where}.basis: {d.get('basis')!r}: gross or net calorific value")
    unknown = set(d) - {"value", "unit", "basis", "source", "year", "note"}
    if unknown:
        raise FactorError(f"{where}: unknown keys {sorted(unknown)}")
    return d


def check_factors(f):
    """The factor set, checked: FactorError naming the first bad key."""
    if not isinstance(f, dict):
        raise FactorError("the factor file must hold a JSON object")
    fuel = f.get("fuel")
    if not isinstance(fuel, dict) or not isinstance(fuel.get("name"), str):
        raise FactorError("fuel: must be an object with a name, emission_factor and "
                          "boiler_efficiency")
    ef = _factor(fuel.get("emission_factor"), "fuel.emission_factor", True, 0, 2)
    eta = _factor(fuel.get("boiler_efficiency"), "fuel.boiler_efficiency", True, 0, 1.2)
    if ef["basis"] != eta["basis"]:
        raise FactorError(f"fuel: the emission factor is on {ef['basis']} calorific value, "
                          f"the boiler efficiency on {eta['basis']}: they must be on the same "
                          "basis")
    if "electricity" in f:
        _factor((f["electricity"] or {}).get("emission_factor"),
                "electricity.emission_factor", False, 0, 2)
    unknown = set(f) - {"name", "fuel", "electricity", "note"}
    if unknown:
        raise FactorError(f"unknown keys {sorted(unknown)}")
    return f


def load_factors(path=None):
    """The factor set from a JSON file, or the default set."""
    if path is None:
        return check_factors(json.loads(json.dumps(DEFAULT_FACTORS)))
    try:
        with open(path, encoding="utf-8") as fh:
            f = json.load(fh)
    except OSError as e:
        raise FactorError(f"{path}: {e.strerror}") from None
    except ValueError as e:
        raise FactorError(f"{path}: not JSON ({e})") from None
    f = check_factors(f)
    f.setdefault("name", str(path))
    return f


def avoided(heat_kwh, pump_kwh, factors):
    """The estimate and every figure it came from."""
    fuel = factors["fuel"]
    ef, eta = fuel["emission_factor"], fuel["boiler_efficiency"]
    fuel_kwh = heat_kwh / eta["value"]
    gross_kg = fuel_kwh * ef["value"]
    out = {
        "estimate": True,
        "label": f"estimate: the metered heat would otherwise have come from a "
                 f"{fuel['name']} boiler",
        "factors": factors.get("name"),
        "heat_kwh": heat_kwh,
        "fuel": fuel["name"],
        "fuel_kwh": fuel_kwh,
        "fuel_factor": ef,
        "boiler_efficiency": eta,
        "avoided_kg": gross_kg,
        "pump_kwh": pump_kwh,
        "pump_kg": None,
        "electricity_factor": None,
        "net_kg": None,
    }
    el = (factors.get("electricity") or {}).get("emission_factor")
    if pump_kwh is not None and el is not None:
        out["electricity_factor"] = el
        out["pump_kg"] = pump_kwh * el["value"]
        out["net_kg"] = gross_kg - out["pump_kg"]
    return out
