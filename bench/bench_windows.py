"""Correlator windows: does a hit cost more when its group's window is full?

A noisy endpoint fills its groups' windows (up to ``max_window_events``) while a sequence
waits for its second rule (the pack's "threat detected, then mitigation failed") or a scan
rule waits for its 20th distinct target (one source, three destinations). Measured side by
side in one run, per rule: the cost of a hit when the window holds ``--full`` entries
against the cost when it holds ``--short`` (the reference). A ratio near 1 means the cost
does not grow with the window; before the window-scan shortcut (stop 10) it was 8.5x
(sequence) and 8.1x (scan) at 1,000 entries.

    .venv/bin/python bench/bench_windows.py

Prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tmsp_correlator.config import DEFAULT_RULES_DIR
from tmsp_correlator.domain.correlation import Hit, Limits, apply_hit, hits_for_event
from tmsp_correlator.domain.rules import RuleSet, load_rule_directory

PACK = Path(DEFAULT_RULES_DIR)
SEQUENCE = "4f1a8d7e-1c52-4c1e-9a51-0b6a3c1d0203"
"""Threat detected, then mitigation failed on the same endpoint within a day."""
SCAN = "4f1a8d7e-1c52-4c1e-9a51-0b6a3c1d0205"
"""One internal source towards 20+ internal destinations in 10 minutes."""
NOISY: dict[str, Any] = {
    "event_type": "detection",
    "product_kind": "threat_discovery_appliance",
    "account_id": "acc1",
    "endpoint_host": "noisy",
    "source_ip": "10.0.0.5",
    "severity": "low",
    "threat_name": "ADW_X",
    "threat_category": "adware",
}


def hits_of(rules: RuleSet, correlation: str, n: int) -> list[Hit]:
    """``n`` hits of one noisy group: detections a second apart, to three destinations."""
    out: list[Hit] = []
    for i in range(n):
        event = dict(
            NOISY, event_id=f"e{i}", ts=1_790_000_000.0 + i, destination_ip=f"10.0.1.{i % 3}"
        )
        out += [h for h in hits_for_event(rules, event) if h["c"] == correlation]
    return out


def per_hit_us(rules: RuleSet, hits: list[Hit], fill: int, limits: Limits) -> float:
    """Mean cost of the hits after the first ``fill``, with the window capped at ``fill``."""
    capped = Limits(allowed_lateness_s=limits.allowed_lateness_s, max_window_events=max(10, fill))
    state = None
    for hit in hits[:fill]:
        state, _ = apply_hit(rules, state, hit, capped)
    rest = hits[fill:]
    started = time.perf_counter()
    for hit in rest:
        state, _ = apply_hit(rules, state, hit, capped)
    return (time.perf_counter() - started) / len(rest) * 1e6


def main(argv: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--full", type=int, default=1000, help="window entries (the measured run)")
    p.add_argument("--short", type=int, default=10, help="window entries (the reference)")
    p.add_argument("--hits", type=int, default=5000, help="hits timed per run")
    args = p.parse_args(argv)
    rules = load_rule_directory(PACK)
    limits = Limits()
    result: dict[str, Any] = {"window_full": args.full, "window_short": args.short}
    for name, correlation in (("sequence", SEQUENCE), ("scan", SCAN)):
        hits = hits_of(rules, correlation, args.full + args.hits)
        full = per_hit_us(rules, hits, args.full, limits)
        short = per_hit_us(rules, hits[: args.short + args.hits], args.short, limits)
        result[name] = {
            "us_per_hit_full_window": round(full, 2),
            "us_per_hit_short_window": round(short, 2),
            "ratio_full_to_short": round(full / short, 2),
        }
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
