"""The node's MQTT payloads checked against their JSON Schemas (schemas/, draft 2020-12).

    from tests.payload_schemas import validate
    validate(topic, payload_bytes)   # PayloadError naming the topic and what is wrong

The schema is picked from the topic, from its end (the prefix has 1..4 levels):
    <prefix>/<site>/<node>/status          status (plain text, not JSON)
    .../telemetry .../event .../state      telemetry, event, state
    .../alarm/<id>                         alarm (id = the topic's last level); b"": removed
    .../cmd/ack                            cmd_ack
    <disc>/<component>/<node_id>/<object_id>/config
                                           ha_<component>; b"": the entity deleted
Anything else (`.../cmd` included: commands go to the node, they are not its payloads) is
a PayloadError too, so a test that validates everything it receives notices a topic no
schema covers.
"""

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
HA_COMPONENTS = ("sensor", "binary_sensor")
# Payloads that may be empty: a retained message deleted (alarm gone, entity removed).
_MAY_BE_EMPTY = ("alarm", "ha_sensor", "ha_binary_sensor")


class PayloadError(AssertionError):
    """A payload that its topic's schema rejects, or a topic with no schema."""


def schema_files():
    return sorted(SCHEMAS.glob("*.schema.json"))


@cache
def _registry():
    resources = []
    for p in schema_files():
        doc = json.loads(p.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@cache
def validator(name):
    return Draft202012Validator(schema(name), registry=_registry())


def schema_for(topic):
    """The schema's name for a topic (PayloadError for a topic no schema covers)."""
    levels = topic.split("/")
    if len(levels) == 5 and levels[4] == "config":
        if levels[1] not in HA_COMPONENTS:
            raise PayloadError(f"{topic}: no schema for the component {levels[1]!r}")
        return "ha_" + levels[1]
    if len(levels) >= 5 and levels[-2] == "alarm":
        return "alarm"
    if len(levels) >= 5 and levels[-2:] == ["cmd", "ack"]:
        return "cmd_ack"
    if len(levels) >= 4 and levels[-1] in ("status", "telemetry", "event", "state"):
        return levels[-1]
    raise PayloadError(f"{topic}: no payload schema for this topic")


def validate(topic, payload):
    """Check one message; returns the decoded payload (str, dict, or None when empty)."""
    name = schema_for(topic)
    payload = bytes(payload)
    if not payload:
        if name in _MAY_BE_EMPTY:
            return None  # retained message deleted
        raise PayloadError(f"{topic}: empty payload")
    try:
        text = payload.decode()
    except UnicodeDecodeError as e:
        raise PayloadError(f"{topic}: not UTF-8: {e}") from None
    if name == "status":
        doc = text  # plain text, checked as a JSON string against its enum
    else:
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise PayloadError(f"{topic}: not JSON ({e}): {text[:200]!r}") from None
    err = best_match(validator(name).iter_errors(doc))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(payload)"
        raise PayloadError(f"{topic}: {name}.schema.json: at {where}: {err.message}; "
                           f"payload {text[:300]!r}")
    if name == "alarm" and doc["id"] != topic.rsplit("/", 1)[1]:
        raise PayloadError(f"{topic}: alarm id {doc['id']!r} is not the topic's")
    return doc


def validate_all(msgs):
    """validate() every (topic, payload, ...) tuple; returns msgs."""
    for m in msgs:
        validate(m[0], m[1])
    return msgs
