"""Fuzz: the adapters take any JSON, and any mutation of GPUd's answers, and give a Snapshot.

Inputs are what a JSON decoder can produce (no lone surrogates). Each result must also survive
scoring and a JSONL round trip, since that is where a snapshot goes next.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.health.gpud import parse_xid_text, snapshot_from_responses
from flow.health.scoring import score_snapshot
from flow.health.snapshot import Snapshot
from gpud.servers import load

# Most of the time goes into drawing examples, not into the adapters: keep the drawn data small.
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=12,
)
STATES = load("v1_states_h100_constructed.json")
METRICS = load("v1_metrics_constructed.json")
INFO = load("machine_info_from_test.json")
KEYS = ["component", "states", "events", "metrics", "extra_info", "data", "uuid", "bus_id", "name",
        "labels", "value", "unix_seconds", "health", "healthy", "reason", "time", "gpuInfo", "gpus"]


def check(snap: Snapshot) -> None:
    assert isinstance(snap, Snapshot)
    score_snapshot(snap)
    assert Snapshot.from_json(snap.to_json()).to_dict() == snap.to_dict()


@FUZZ
@given(json_values, json_values, json_values, json_values)
def test_any_json_in_any_place_gives_a_snapshot(states: Any, events: Any, metrics: Any, info: Any) -> None:
    check(snapshot_from_responses(states, events, metrics, info, task_id="t"))


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5), max_size=3))
def test_envelopes_with_gpud_keys_and_any_values_give_a_snapshot(entries: list[dict[str, Any]]) -> None:
    check(snapshot_from_responses(entries, entries, entries, entries[0] if entries else None, task_id="t"))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document; blobs in extra_info["data"] are decoded."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


def _decoded(states: Any) -> Any:
    """The states answer with every blob decoded in place, so mutations can reach inside them."""
    doc = copy.deepcopy(states)
    for entry in doc:
        for state in entry["states"]:
            if "extra_info" in state:
                state["extra_info"]["data"] = json.loads(state["extra_info"]["data"])
    return doc


def _encoded(doc: Any) -> Any:
    for entry in doc if isinstance(doc, list) else []:
        states = entry.get("states") if isinstance(entry, dict) else None
        # A mutation may have made `states` anything (1, "x", {}): only a list holds states.
        for state in states if isinstance(states, list) else []:
            info = state.get("extra_info") if isinstance(state, dict) else None
            if isinstance(info, dict) and not isinstance(info.get("data"), str) and "data" in info:
                info["data"] = json.dumps(info["data"])
    return doc


DECODED = _decoded(STATES)
PATHS = _paths(DECODED)[1:]


def _mutate(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values, st.booleans()), min_size=1, max_size=4))
def test_mutated_h100_states_give_a_snapshot(mutations: list[tuple[tuple[Any, ...], Any, bool]]) -> None:
    doc = DECODED
    for path, value, delete in mutations:
        try:
            doc = _mutate(doc, path, value, delete)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    snap = snapshot_from_responses(_encoded(doc), None, METRICS, INFO, task_id="t")
    check(snap)


@FUZZ
@given(st.sampled_from(_paths(METRICS)[1:]), json_values)
def test_mutated_metrics_give_a_snapshot(path: tuple[Any, ...], value: Any) -> None:
    check(snapshot_from_responses(STATES, None, _mutate(METRICS, path, value, False), None, task_id="t"))


@FUZZ
@given(st.sampled_from(_paths(INFO)[1:]), json_values)
def test_mutated_machine_info_gives_a_snapshot(path: tuple[Any, ...], value: Any) -> None:
    check(snapshot_from_responses(STATES, None, None, _mutate(INFO, path, value, False), task_id="t"))


@FUZZ
@given(st.text(max_size=200) | st.builds(lambda a, b: f"{a}XID {b}", text, text))
def test_xid_parsing_takes_any_text(message: str) -> None:
    for xid in parse_xid_text(message):
        assert xid.code >= 0 and xid.message.startswith("XID")


@FUZZ
@given(st.integers(0, 9999), st.sampled_from(["0000:18:00", "0000:2a:00", "00000000:3B:00"]),
       st.sampled_from(["{n}({d}) detected on PCI:{bus}",
                        "{n} ({d}) detected on GPU PCI:{bus} UUID:GPU-1",
                        "{n} SOME_MNEMONIC {d} detected on GPU PCI:{bus}"]),
       text.filter(lambda t: "XID" not in t))
def test_generated_xid_reasons_parse_to_their_code(code: int, bus: str, form: str, description: str) -> None:
    description = description.replace("detected on", "")
    [xid] = parse_xid_text("XID " + form.format(n=code, d=description, bus=bus))
    assert xid.code == code
