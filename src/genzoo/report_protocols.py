"""genzoo-report's columns under fidelity protocols: a fidelity number (FID, IS, KID, …) is comparable only with one
of the same protocol (``genzoo.evaluation.protocol``), so each fidelity column holds one protocol, tagged in its
header (``test/fid [P1]``) and spelled out in the report's table of protocols. Runs measured under another protocol,
or with none recorded (older runs), get a column of their own and are never averaged with the others."""

from __future__ import annotations

import math
from dataclasses import dataclass

from genzoo.evaluation.protocol import describe, identity, is_fidelity_metric, protocol_key
from genzoo.report_read import Run


def mapping(node, key: str) -> dict:
    """``node[key]`` where both are mappings, else {}: for the optional parts of a config the report looks up."""
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def measured(run: Run, key: str) -> bool:
    value = run.final.get(key)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_protocol(run: Run, key: str) -> dict | None:
    """The protocol ``run`` measured fidelity metric ``key`` with (None: not recorded); best_score is the monitor's
    value, a fidelity metric of the validation split for a GAN."""
    if key == "best_score":
        monitor = mapping(run.config, "model").get("monitor")
        key = monitor if isinstance(monitor, str) else key
    if not is_fidelity_metric(key):
        return None
    value = run.final.get(protocol_key(key))
    return value if isinstance(value, dict) else None


def is_protocol_bound(runs: list[Run], key: str) -> bool:
    if key == "best_score":
        return any(is_fidelity_metric(str(mapping(r.config, "model").get("monitor"))) for r in runs)
    return is_fidelity_metric(key)


@dataclass
class Column:
    name: str            # the header: the metric, and for a fidelity metric its protocol's tag
    metric: str
    protocol: str | None  # identity of the protocol (genzoo.evaluation.protocol.identity); None: not a fidelity metric


def protocols_of(runs: list[Run], keys: list[str]) -> dict[str, dict]:
    """identity → {'tag': 'P1', 'protocol': the record, 'describe': one line}, tags in order of first use."""
    found: dict[str, dict | None] = {}
    for key in keys:
        if is_protocol_bound(runs, key):
            for run in runs:
                if measured(run, key):
                    record = run_protocol(run, key)
                    found.setdefault(identity(record), record)
    out = {}
    for ident, record in found.items():
        tag = f"P{len([i for i in out if i])+1}" if ident else "no protocol"
        out[ident] = {"tag": tag, "protocol": record, "describe": describe(record)}
    return out


def columns_for(runs: list[Run], keys: list[str], protocols: dict[str, dict]) -> list[Column]:
    """One column per metric, and per protocol for a fidelity metric: numbers of two protocols never share one."""
    columns = []
    for key in keys:
        if not is_protocol_bound(runs, key):
            columns.append(Column(key, key, None))
            continue
        seen = dict.fromkeys(identity(run_protocol(r, key)) for r in runs if measured(r, key))
        columns += [Column(f"{key} [{protocols[i]['tag']}]", key, i) for i in seen]
    return columns
