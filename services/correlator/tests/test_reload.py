"""Rule reload: the running rule set is swapped, window state survives, bad files are named."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tmsp_correlator.bootstrap import Container, build
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.domain.correlation import GroupState, Limits, apply_hit, hits_for_event
from tmsp_correlator.domain.rules import RuleRejection, reload_rules
from tmsp_correlator.entrypoints.main import prepare_data_dir

DETECTION = """title: High severity detection
name: high
logsource: {category: detection}
level: high
detection:
  s:
    severity: high
  condition: s
"""
BURST = """title: Burst {version}
name: burst
level: critical
correlation:
  type: event_count
  rules: [high]
  group-by: [Hostname]
  timespan: 10m
  condition: {{gte: 3}}
"""


class Unused:
    """Ports the reload path never touches."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call {name}")


def container(rules_dir: Path) -> Container:
    settings = CorrelatorSettings(rules_dir=str(rules_dir), rules_reload_interval_s=1)
    u: Any = Unused()
    return build(settings, publisher=u, incidents=u, nonconforming=u, liveness=u, maintenance=u)


def high(eid: str, t: float) -> dict[str, Any]:
    return {
        "event_type": "detection",
        "product_kind": "threat_discovery_appliance",
        "account_id": "acc1",
        "event_id": eid,
        "ts": t,
        "severity": "high",
        "endpoint_host": "pc1",
    }


def feed(c: Container, states: dict[str, GroupState], event: dict[str, Any]) -> list[Any]:
    incidents = []
    for hit in hits_for_event(c.rules, event):
        st, out = apply_hit(c.rules, states.get(hit["k"]), hit, Limits())
        states[hit["k"]] = st
        if out.incident is not None:
            incidents.append(out.incident)
    return incidents


def test_reload_swaps_rules_and_keeps_window_state(tmp_path: Path) -> None:
    (tmp_path / "det.yml").write_text(DETECTION)
    (tmp_path / "corr.yml").write_text(BURST.format(version="v1"))
    c = container(tmp_path)
    assert not c.reload_rules_if_changed()  # nothing changed yet
    states: dict[str, GroupState] = {}
    assert feed(c, states, high("a", 0)) == []
    assert feed(c, states, high("b", 10)) == []

    (tmp_path / "corr.yml").write_text(BURST.format(version="v2 (edited)"))
    (tmp_path / "broken.yml").write_text("title: [unclosed\n")
    before = c.rules
    assert c.reload_rules_if_changed()
    assert c.rules is not before
    assert [(r.file, "invalid YAML" in r.reason) for r in c.rules.rejected] == [
        ("broken.yml", True)
    ]

    (inc,) = feed(c, states, high("c", 20))
    assert inc["count"] == 3 and sorted(inc["event_ids"]) == ["a", "b", "c"]
    assert inc["title"] == "Burst v2 (edited)"


def test_removed_correlation_leaves_the_rest_running(tmp_path: Path) -> None:
    (tmp_path / "det.yml").write_text(DETECTION)
    (tmp_path / "corr.yml").write_text(BURST.format(version="v1"))
    c = container(tmp_path)
    states: dict[str, GroupState] = {}
    feed(c, states, high("a", 0))
    (tmp_path / "corr.yml").unlink()
    assert c.reload_rules_if_changed()
    # without the correlation the detection rule raises incidents on its own
    (inc,) = feed(c, states, high("b", 10))
    assert inc["title"] == "High severity detection" and inc["event_ids"] == ["b"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time_zone", "Mars/Olympus"),
        ("daily_count_cron", "at two"),
        ("daily_count_cron", "0 25 * * *"),
    ],
)
def test_bad_schedule_settings_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        CorrelatorSettings(**{field: value})


def test_the_working_directory_is_under_the_temp_dir_unless_set(tmp_path: Path) -> None:
    # not the process's working directory: the Kubernetes root filesystem is read-only
    default = CorrelatorSettings(app_id="corr-a").data_path
    assert default == Path(tempfile.gettempdir()) / "tmsp-correlator" / "corr-a"
    assert CorrelatorSettings(app_id="corr-b").data_path != default
    assert CorrelatorSettings(data_dir=str(tmp_path)).data_path == tmp_path


def test_the_data_directory_is_created_with_its_parents_or_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nested = tmp_path / "absent" / "parent" / "corr-a"
    prepare_data_dir(CorrelatorSettings(data_dir=str(nested)))
    assert nested.is_dir()
    prepare_data_dir(CorrelatorSettings(data_dir=str(nested)))  # already there: fine
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exited:
        prepare_data_dir(CorrelatorSettings(data_dir=str(blocker / "corr-a")))
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(blocker / "corr-a") in err[0] and "TMSP_CORRELATOR_DATA_DIR" in err[0]


BROKEN_BURST = BURST.format(version="v3").replace("type: event_count", "type: event_cont")


def test_an_edit_with_a_rejected_rule_keeps_the_files_last_clean_version(tmp_path: Path) -> None:
    """A typo in an edited correlation must not switch the correlation off: the file's last
    clean version keeps running (and counting) until the file loads cleanly again."""
    (tmp_path / "det.yml").write_text(DETECTION)
    (tmp_path / "corr.yml").write_text(BURST.format(version="v1"))
    c = container(tmp_path)
    states: dict[str, GroupState] = {}
    feed(c, states, high("a", 0))
    (tmp_path / "corr.yml").write_text(BROKEN_BURST)
    assert c.reload_rules_if_changed()
    assert c.rules.rejected == []  # the running set: v1 of corr.yml, no rejection
    feed(c, states, high("b", 10))
    (inc,) = feed(c, states, high("c", 20))
    assert inc["title"] == "Burst v1" and inc["count"] == 3
    # fixed: the new version runs
    (tmp_path / "corr.yml").write_text(BURST.format(version="v4"))
    assert c.reload_rules_if_changed()
    assert [k.meta.title for k in c.rules.correlations.values()] == ["Burst v4"]
    (again,) = feed(c, states, high("d", 30))
    assert again["id"] == inc["id"] and again["count"] == 4  # the window state stayed


def test_a_file_never_clean_loads_its_good_rules_and_a_removed_one_goes(tmp_path: Path) -> None:
    (tmp_path / "det.yml").write_text(DETECTION)
    c = container(tmp_path)
    # new, with one good and one bad rule: no clean version to fall back to
    other = DETECTION.replace("name: high", "name: other").replace("severity: high", "x: y")
    (tmp_path / "more.yml").write_text(other + "---\n" + BROKEN_BURST)
    assert c.reload_rules_if_changed()
    assert "other" in {d.meta.name for d in c.rules.detections.values()}
    assert [r.file for r in c.rules.rejected] == ["more.yml"]
    (tmp_path / "det.yml").unlink()
    assert c.reload_rules_if_changed()
    assert "high" not in {d.meta.name for d in c.rules.detections.values()}


def test_reload_rules_falls_back_per_file() -> None:
    det, corr = ("det.yml", DETECTION), ("corr.yml", BURST.format(version="v1"))
    first = reload_rules([det, corr], [], {})
    assert first.kept == {} and first.clean == dict([det, corr])
    # corr.yml edited badly, det.yml unreadable now: both keep their clean versions
    unreadable = [RuleRejection("det.yml", "", "invalid utf-8")]
    second = reload_rules([("corr.yml", BROKEN_BURST)], unreadable, first.clean)
    assert sorted(second.kept) == ["corr.yml", "det.yml"]
    assert "event_cont" in second.kept["corr.yml"][0].reason
    assert second.rules.rejected == []
    assert {c.meta.title for c in second.rules.correlations.values()} == {"Burst v1"}
    assert second.clean == first.clean
    # a file whose clean version no longer loads either (its reference is gone) stays
    # rejected and has no clean version any more
    third = reload_rules([("corr.yml", BROKEN_BURST)], [], {"corr.yml": corr[1]})
    assert [r.file for r in third.rules.rejected] == ["corr.yml"]
    assert third.clean == {} and sorted(third.kept) == ["corr.yml"]


class RuleFiles:
    def __init__(self) -> None:
        self.saved: list[dict[str, str]] = []

    async def load(self) -> dict[str, str]:
        return self.saved[-1] if self.saved else {}

    async def save(self, clean: dict[str, str]) -> None:
        self.saved.append(dict(clean))


async def test_clean_versions_are_stored_when_they_change_and_used_at_the_next_start(
    tmp_path: Path,
) -> None:
    (tmp_path / "burst.yml").write_text(DETECTION + "---\n" + BURST.format(version="v1"))
    settings = CorrelatorSettings(rules_dir=str(tmp_path), rules_reload_interval_s=1)
    u: Any = Unused()
    store = RuleFiles()
    c = build(
        settings,
        publisher=u,
        incidents=u,
        nonconforming=u,
        liveness=u,
        maintenance=u,
        rule_files=store,
    )
    await c.save_clean_rule_files()
    await c.save_clean_rule_files()  # nothing changed: no second write
    assert len(store.saved) == 1 and "Burst v1" in store.saved[0]["burst.yml"]
    # broken on disk at the next start: the stored clean version runs
    (tmp_path / "burst.yml").write_text(
        DETECTION + "---\n" + BURST.format(version="v2") + "---\ntitle: bad\n"
    )
    again = build(
        settings,
        publisher=u,
        incidents=u,
        nonconforming=u,
        liveness=u,
        maintenance=u,
        rule_files=store,
        stored_clean_rule_files=await store.load(),
    )
    assert [r.meta.title for r in again.rules.correlations.values()] == ["Burst v1"]
    await again.save_clean_rule_files()
    assert len(store.saved) == 1  # the kept version is what is stored already
