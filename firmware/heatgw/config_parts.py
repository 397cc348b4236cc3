# GENERATED FILE - do not edit by hand.
# Written by host_tools/gen_config_parts.py from firmware/heatgw/config_schema.py; after
# any change there, regenerate with
#     .venv/bin/python -m host_tools.gen_config_parts
# tests/test_config_heap.py fails when this file differs from a fresh generation.
"""heatgw.config_schema.SCHEMA in pieces (generated): SECTIONS[name]() builds one
top-level key's schema node, rules() the cross-field rules, so that a running node
validates its configuration one section at a time (heatgw.cfgedit) instead of holding the
whole schema in RAM. Without the documentation no error message quotes ("doc" is kept
where a required key or a "chars" check says it)."""

VERSION = 2
ROOT = {'doc': 'heatgw node configuration (one JSON file)', 'type': 'object'}
NAMES = ('analog',
         'bms',
         'control',
         'flow',
         'meter',
         'modbus',
         'mqtt',
         'node_id',
         'persist',
         'recovery',
         'safe_mode',
         'sensors',
         'site',
         'supervisor',
         'telemetry',
         'version')


def _analog():
    return {'default': None, 'keys': {}, 'null': True, 'type': 'object'}


def _bms():
    return {'default': None, 'keys': {}, 'null': True, 'type': 'object'}


def _control():
    return {'default': {},
            'keys': {'it_coolant_hyst_k': {'default': 2.0,
                                           'max': 50.0,
                                           'min': 0.1,
                                           'type': 'float',
                                           'unit': 'K'},
                     'it_coolant_max_c': {'default': 44.0,
                                          'max': 150.0,
                                          'min': 0.0,
                                          'type': 'float',
                                          'unit': 'C'},
                     'min_dwell_s': {'default': 600,
                                     'max': 86400,
                                     'min': 0,
                                     'type': 'int',
                                     'unit': 's'},
                     'recover_s': {'default': 120,
                                   'max': 86400,
                                   'min': 0,
                                   'type': 'int',
                                   'unit': 's'},
                     'sink_flow_hyst_m3h': {'default': 0.5,
                                            'max': 100.0,
                                            'min': 0.0,
                                            'type': 'float',
                                            'unit': 'm3/h'},
                     'sink_flow_min_m3h': {'default': 3.0,
                                           'max': 1000.0,
                                           'min': 0.0,
                                           'type': 'float',
                                           'unit': 'm3/h'},
                     'sink_return_hyst_k': {'default': 2.0,
                                            'max': 50.0,
                                            'min': 0.1,
                                            'type': 'float',
                                            'unit': 'K'},
                     'sink_return_max_c': {'default': 45.0,
                                           'max': 150.0,
                                           'min': 0.0,
                                           'type': 'float',
                                           'unit': 'C'},
                     'sink_signal': {'default': True, 'type': 'bool'},
                     'sink_sources': {'default': {},
                                      'keys': {'modbus': {'default': None,
                                                          'max': 86400,
                                                          'min': 2,
                                                          'null': True,
                                                          'type': 'int',
                                                          'unit': 's'},
                                               'mqtt': {'default': None,
                                                        'max': 86400,
                                                        'min': 2,
                                                        'null': True,
                                                        'type': 'int',
                                                        'unit': 's'}},
                                      'type': 'object'},
                     'stale_s': {'default': 5, 'max': 3600, 'min': 1, 'type': 'int', 'unit': 's'},
                     'tick_ms': {'default': 1000,
                                 'max': 1000,
                                 'min': 100,
                                 'type': 'int',
                                 'unit': 'ms'},
                     'valve_feedback': {'default': True, 'type': 'bool'},
                     'valve_travel_s': {'default': 45,
                                        'max': 600,
                                        'min': 1,
                                        'type': 'int',
                                        'unit': 's'}},
            'type': 'object'}


def _flow():
    return {'default': None,
            'keys': {'critical': {'default': True, 'type': 'bool'},
                     'litres_per_pulse': {'max': 1000.0,
                                          'min': 1e-06,
                                          'step': 1e-06,
                                          'type': 'float',
                                          'unit': 'L'},
                     'max_m3h': {'doc': 'rates above this are implausible',
                                 'max': 1000.0,
                                 'min': 0.01,
                                 'req': True,
                                 'type': 'float',
                                 'unit': 'm3/h'},
                     'meter': {'chars': 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_',
                               'doc': 'modbus: the flow meter in modbus.meters (role flow) whose '
                                      'volume_m3 (and flow_m3h) feed the heat meter',
                               'len': [1, 16],
                               'type': 'str'},
                     'min_pulse_ms': {'default': 0.0,
                                      'max': 1000.0,
                                      'min': 0.0,
                                      'step': 0.001,
                                      'type': 'float',
                                      'unit': 'ms'},
                     'pulses_per_litre': {'max': 100000.0,
                                          'min': 0.001,
                                          'step': 0.001,
                                          'type': 'float',
                                          'unit': '1/L'},
                     'stuck_active_s': {'default': None,
                                        'max': 86400.0,
                                        'min': 1.0,
                                        'null': True,
                                        'type': 'float',
                                        'unit': 's'},
                     'type': {'default': 'pulse', 'enum': ['pulse', 'modbus'], 'type': 'str'},
                     'zero_after_s': {'default': 60.0,
                                      'max': 3600.0,
                                      'min': 0.1,
                                      'type': 'float',
                                      'unit': 's'}},
            'null': True,
            'type': 'object'}


def _meter():
    return {'default': {},
            'keys': {'cutoff_k': {'default': 0.2,
                                  'max': 5.0,
                                  'min': 0.0,
                                  'type': 'float',
                                  'unit': 'K'},
                     'fluid': {'default': 'water',
                               'enum': ['water', 'propylene_glycol', 'ethylene_glycol'],
                               'type': 'str'},
                     'mass_fraction': {'default': 0.0,
                                       'max': 0.6,
                                       'min': 0.0,
                                       'type': 'float',
                                       'unit': 'kg/kg'},
                     'meter_in_return': {'default': True, 'type': 'bool'}},
            'type': 'object'}


def _modbus():
    return {'default': None, 'keys': {}, 'null': True, 'type': 'object'}


def _mqtt():
    return {'default': None,
            'keys': {'clean_session': {'default': True, 'type': 'bool'},
                     'client_id': {'chars': 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_',
                                   'default': None,
                                   'doc': 'MQTT client id; null: node_id',
                                   'len': [1, 64],
                                   'null': True,
                                   'type': 'str'},
                     'ha_discovery_prefix': {'chars': 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/',
                                             'default': None,
                                             'doc': 'Home Assistant discovery prefix, e.g. '
                                                    'homeassistant; null: no discovery',
                                             'len': [1, 32],
                                             'null': True,
                                             'type': 'str'},
                     'host': {'doc': 'broker host name or IP address; an address needs no DNS '
                                     'lookup, which blocks',
                              'len': [1, 64],
                              'req': True,
                              'type': 'str'},
                     'keepalive_s': {'default': 60,
                                     'max': 3600,
                                     'min': 5,
                                     'type': 'int',
                                     'unit': 's'},
                     'port': {'default': None,
                              'max': 65535,
                              'min': 1,
                              'null': True,
                              'type': 'int',
                              'unit': ''},
                     'prefix': {'chars': 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/',
                                'default': 'heatgw',
                                'doc': 'topic prefix: <prefix>/<site>/<node_id>/...',
                                'len': [1, 32],
                                'type': 'str'},
                     'site': {'chars': 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_',
                              'doc': 'site id in the topics: letters, digits, - and _',
                              'len': [1, 32],
                              'req': True,
                              'type': 'str'},
                     'tls': {'default': None,
                             'keys': {'ca_file': {'doc': "the broker's CA certificate, DER, on "
                                                         "the node's file system: e.g. /ca.der",
                                                  'len': [1, 128],
                                                  'req': True,
                                                  'type': 'str'}},
                             'null': True,
                             'type': 'object'},
                     'username': {'default': None, 'len': [1, 64], 'null': True, 'type': 'str'}},
            'null': True,
            'type': 'object'}


def _node_id():
    return {'chars': 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_',
            'default': 'heatgw',
            'doc': 'node name in MQTT topics: letters, digits, - and _',
            'len': [1, 32],
            'type': 'str'}


def _persist():
    return {'default': {},
            'keys': {'interval_s': {'default': 300,
                                    'max': 86400,
                                    'min': 10,
                                    'type': 'int',
                                    'unit': 's'}},
            'type': 'object'}


def _recovery():
    return {'default': None, 'keys': {}, 'null': True, 'type': 'object'}


def _safe_mode():
    return {'default': {},
            'keys': {'resets': {'default': 4,
                                'max': 50,
                                'min': 0,
                                'type': 'int',
                                'unit': 'resets'},
                     'window_min': {'default': 10,
                                    'max': 1440,
                                    'min': 1,
                                    'type': 'int',
                                    'unit': 'min'}},
            'type': 'object'}


def _sensors():
    n0 = {'keys': {'critical': {'default': True, 'type': 'bool'},
                   'max_c': {'default': 120.0,
                             'max': 200.0,
                             'min': -50.0,
                             'type': 'float',
                             'unit': 'C'},
                   'min_c': {'default': 0.0,
                             'max': 200.0,
                             'min': -50.0,
                             'type': 'float',
                             'unit': 'C'},
                   'offset_k': {'default': 0.0,
                                'max': 5.0,
                                'min': -5.0,
                                'type': 'float',
                                'unit': 'K'},
                   'r0_ohm': {'doc': 'RTD resistance at 0 C: 100 (PT100) or 1000 (PT1000)',
                              'enum': [100, 1000],
                              'req': True,
                              'type': 'int',
                              'unit': 'ohm'},
                   'wires': {'doc': 'RTD wiring: 2, 3 or 4 wires',
                             'enum': [2, 3, 4],
                             'req': True,
                             'type': 'int'}},
          'type': 'object'}
    return {'default': {},
            'keys': {'it_coolant': n0, 'return': n0, 'sink_return': n0, 'supply': n0},
            'type': 'object'}


def _site():
    return {'default': {},
            'keys': {'mains_hz': {'enum': [50, 60], 'type': 'int', 'unit': 'Hz'}},
            'type': 'object'}


def _supervisor():
    return {'default': {},
            'keys': {'stall_s': {'default': 3, 'max': 600, 'min': 1, 'type': 'int', 'unit': 's'},
                     'watchdog_ms': {'default': 5000,
                                     'max': 8300,
                                     'min': 1,
                                     'type': 'int',
                                     'unit': 'ms'}},
            'type': 'object'}


def _telemetry():
    return {'default': {},
            'keys': {'interval_s': {'default': 10,
                                    'max': 3600,
                                    'min': 1,
                                    'type': 'int',
                                    'unit': 's'},
                     'queue_capacity': {'default': None,
                                        'max': 100000,
                                        'min': 16,
                                        'null': True,
                                        'type': 'int',
                                        'unit': 'records'}},
            'type': 'object'}


def _version():
    return {'doc': 'configuration format version (older files are migrated)',
            'enum': [2],
            'req': True,
            'type': 'int'}


def rules():
    return [['req',
             'site.mains_hz',
             'sensors',
             '50 or 60: the mains frequency at the site, which the RTD converters filter out'],
            ['one',
             'flow',
             ['litres_per_pulse', 'pulses_per_litre'],
             "a pulse meter's K-factor",
             ['flow.type', ['pulse']]],
            ['req',
             'flow.meter',
             'flow',
             'the Modbus flow meter, a name in modbus.meters',
             ['flow.type', ['modbus']]],
            ['lt', 'sensors.*.min_c', 'sensors.*.max_c', 'the sensor range must not be empty'],
            ['lt',
             'control.sink_return_max_c',
             'sensors.sink_return.max_c',
             'the trip point must be inside the sensor range'],
            ['gt',
             ['-', 'control.sink_return_max_c', 'control.sink_return_hyst_k'],
             'sensors.sink_return.min_c',
             'hysteresis must be smaller than the threshold span'],
            ['lt',
             'control.it_coolant_max_c',
             'sensors.it_coolant.max_c',
             'the trip point must be inside the sensor range'],
            ['gt',
             ['-', 'control.it_coolant_max_c', 'control.it_coolant_hyst_k'],
             'sensors.it_coolant.min_c',
             'hysteresis must be smaller than the threshold span'],
            ['lt',
             'control.sink_flow_min_m3h',
             'flow.max_m3h',
             "the low-flow threshold must be below the meter's maximum"],
            ['lt',
             ['+', 'control.sink_flow_min_m3h', 'control.sink_flow_hyst_m3h'],
             'flow.max_m3h',
             'hysteresis must be smaller than the threshold span'],
            ['le',
             'flow.max_m3h',
             ['*', 1800, 'flow.litres_per_pulse'],
             "the pulse rate at max_m3h must be at most the input's 500 Hz"],
            ['le',
             ['*', 'flow.max_m3h', 'flow.pulses_per_litre'],
             1800,
             "the pulse rate at max_m3h must be at most the input's 500 Hz"],
            ['lt',
             ['*', 'flow.min_pulse_ms', 'flow.max_m3h'],
             ['*', 1800, 'flow.litres_per_pulse'],
             'min_pulse_ms must be under half the pulse period at max_m3h'],
            ['lt',
             ['*', ['*', 'flow.min_pulse_ms', 'flow.max_m3h'], 'flow.pulses_per_litre'],
             1800,
             'min_pulse_ms must be under half the pulse period at max_m3h'],
            ['gt',
             'flow.zero_after_s',
             ['/', ['*', 3.6, 'flow.litres_per_pulse'], 'control.sink_flow_min_m3h'],
             'zero_after_s must exceed one pulse at control.sink_flow_min_m3h'],
            ['gt',
             'flow.zero_after_s',
             ['/', 3.6, ['*', 'flow.pulses_per_litre', 'control.sink_flow_min_m3h']],
             'zero_after_s must exceed one pulse at control.sink_flow_min_m3h'],
            ['gt',
             'supervisor.watchdog_ms',
             ['*', 2, 'control.tick_ms'],
             'the watchdog must outlast two control ticks'],
            ['ge',
             ['*', 1000, 'supervisor.stall_s'],
             ['*', 2, 'control.tick_ms'],
             'a task is stalled only after two missed ticks'],
            ['ge',
             ['*', 1000, 'control.stale_s'],
             ['*', 2, 'control.tick_ms'],
             'a reading is stale only after two missed ticks'],
            ['eq',
             'meter.mass_fraction',
             0,
             'water takes no glycol mass fraction',
             ['meter.fluid', ['water']]],
            ['gt',
             'meter.mass_fraction',
             0,
             'a glycol needs its mass fraction, e.g. 0.3 for 30 %',
             ['meter.fluid', ['propylene_glycol', 'ethylene_glycol']]]]


SECTIONS = {'analog': _analog,
            'bms': _bms,
            'control': _control,
            'flow': _flow,
            'meter': _meter,
            'modbus': _modbus,
            'mqtt': _mqtt,
            'node_id': _node_id,
            'persist': _persist,
            'recovery': _recovery,
            'safe_mode': _safe_mode,
            'sensors': _sensors,
            'site': _site,
            'supervisor': _supervisor,
            'telemetry': _telemetry,
            'version': _version}
