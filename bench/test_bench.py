"""Checks of the benchmark's own arithmetic: `.venv/bin/python -m pytest bench/`.

Not part of `make test` (pyproject's testpaths is `tests/`). Covered: polling cycles from request
times (one read per tick, several reads per tick, a missing rule), the nearest-rank percentile,
/proc parsing, py-spy's collapsed stacks summed by activity, `-X importtime` sums, the table and
the target verdicts of issue 12, rules taking turns over the sources, every bench source
answering what a run asks of it, and bench/readings.py: a row for every source type, CPU (not
waiting) per call, a reading waited for, the table, and the cron row measured for real.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from bench.daemon import polling_cycles
from bench.procstat import (
    memory_parts,
    read_cpu_seconds,
    read_memory_parts,
    read_rss_bytes,
    read_system_busy_seconds,
)
from bench.profile import import_times, read_collapsed, summarize
from bench.readings import SOURCES as READING_SOURCES
from bench.readings import (
    Measured,
    Row,
    as_json,
    cpu_ms_per_call,
    measure_source,
    render_json_rows,
    table_line,
    wait_for_reading,
)
from bench.run import memory_lines, percentile, table, targets, write_rules
from bench.sources import BENCH_SOURCES
from eventscaler.sources import SOURCE_MODULES
from eventscaler.sources.base import SourceError


def test_cycles_line_up_the_kth_tick_of_every_rule() -> None:
    gets = {"a": [10.0, 15.0, 20.0], "b": [10.4, 15.3, 20.2]}
    cycles = polling_cycles(gets, ["a", "b"], interval=5.0)
    assert [(c.first, c.last, c.rules) for c in cycles] == [
        (10.0, 10.4, 2),
        (15.0, 15.3, 2),
        (20.0, 20.2, 2),
    ]
    assert abs(cycles[0].span - 0.4) < 1e-9


def test_reads_close_together_are_one_tick_of_that_rule() -> None:
    # A tick that reads twice (a 409 re-read) stays one tick, ending at its last read.
    gets = {"a": [10.0, 10.1, 15.0], "b": [10.2, 15.1]}
    cycles = polling_cycles(gets, ["a", "b"], interval=5.0)
    assert [(c.first, c.last) for c in cycles] == [(10.0, 10.2), (15.0, 15.1)]


def test_a_rule_that_never_read_is_missing_from_its_cycles() -> None:
    cycles = polling_cycles({"a": [1.0, 6.0]}, ["a", "b"], interval=5.0)
    assert [c.rules for c in cycles] == [1, 1]


def test_nearest_rank_percentile() -> None:
    values = [float(i) for i in range(1, 21)]
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 0.5) == 10.0
    assert percentile([3.0], 0.95) == 3.0


def test_proc_readers_see_this_process() -> None:
    assert (read_rss_bytes(os.getpid()) or 0) > 1024 * 1024
    parts = read_memory_parts(os.getpid()) or {}
    # This process maps libpython or the interpreter, and has anonymous pages of its own.
    assert parts["anonymous"] > 0 and any(key.startswith("file ") for key in parts)
    assert (read_cpu_seconds(os.getpid()) or 0) > 0
    assert read_system_busy_seconds() > 0
    assert read_rss_bytes(2**22 + 12345) is None  # beyond pid_max: no such process


def test_collapsed_stacks_summed_by_activity(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "RuleSchedule._run (eventscaler/schedule.py);"
        "read_length (eventscaler/sources/azure_queue.py);send (requests/sessions.py) 6\n"
        "RuleSchedule._run (eventscaler/schedule.py);read (eventscaler/kube.py);"
        "call_api (kubernetes/client/api_client.py);read (ssl.py) 3\n"
        "BaseScheduler._process_jobs (apscheduler/schedulers/base.py);"
        "RuleSchedule._fire (eventscaler/schedule.py);"
        "RuleSchedule._hand_over (eventscaler/schedule.py) 1\n"
        "RuleSchedule._run (eventscaler/schedule.py);decide (eventscaler/policy.py) 2\n"
    )
    summary = summarize(read_collapsed(raw))
    shares = {a["what"]: a["share"] for a in summary["activities"]}
    assert summary["samples"] == 12
    assert shares["azure queue read (azure SDK)"] == 0.5
    assert shares["kubernetes client"] == 0.25
    assert shares["TLS (ssl)"] == 0.25
    assert shares["scheduler (APScheduler and its lanes)"] == round(1 / 12, 3)  # not the runs
    assert shares["decision (policy.py)"] == round(2 / 12, 3)
    assert summary["self"][0] == {
        "what": "send (requests/sessions.py)",
        "samples": 6,
        "share": 0.5,
    }


def test_import_times_by_package() -> None:
    text = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:      1000 |       1000 |   yaml.reader\n"
        "import time:      2000 |       3000 | yaml\n"
        "import time:    500000 |     500000 | kubernetes\n"
        "something else\n"
    )
    result = import_times(text)
    assert result["total_s"] == 0.503
    assert result["by_package_s"] == {"kubernetes": 0.5, "yaml": 0.003}


SMAPS = """\
55d0a1a00000-55d0a1c00000 rw-p 00000000 00:00 0                          [heap]
Size:               2048 kB
Rss:                1536 kB
7f00aa000000-7f00aa100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                1024 kB
7f00ab000000-7f00ab200000 r-xp 00001000 08:01 42                         /usr/lib/libcrypto.so.3
Size:               2048 kB
Rss:                 512 kB
7f00ab200000-7f00ab210000 r--p 00201000 08:01 42                         /usr/lib/libcrypto.so.3
Rss:                 512 kB
7f00ac000000-7f00ac010000 r-xp 00000000 08:01 43                         /venv/x/_rust.abi3.so
Rss:                2048 kB
7f00ad000000-7f00ad010000 r-xp 00000000 08:01 44                         /usr/lib/libz.so.1
Rss:                 256 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 128 kB
"""


def test_memory_parts_from_smaps() -> None:
    parts = memory_parts(SMAPS, largest=2)
    # Both libcrypto mappings add up; libz, outside the 2 largest, is "the rest".
    assert parts == {
        "file _rust.abi3.so": 2.0,
        "file libcrypto.so.3": 1.0,
        "files, the rest": 0.2,
        "heap": 1.5,
        "stack": 0.1,
        "anonymous": 1.0,
    }


def test_table_and_targets() -> None:
    results = [
        {"rules": 0, "hwm_mib": 50.0, "startup_rules_loaded_s": 0.9},
        {
            "rules": 1000,
            "cpu_s_per_interval": 2.2,
            "bare_cpu_s_per_interval": 2.0,
            "cpu_ratio": 1.1,
            "cpu_ms_per_rule_tick": 2.2,
            "bare_cpu_ms_per_call": 2.0,
            "reaction": {"median_s": 2.5, "p95_s": 5.2},
            "hwm_mib": 75.0,
            "hwm_age_s": 61.0,
            "memory_parts_mib": {"file libcrypto.so.3": 4.0, "anonymous": 36.0},
            "reads_per_rule_per_tick": 0.17,
            "writes_per_tick": 0.0,
            "startup_first_decision_s": 1.2,
            "mass_event": {"until_all_scaled_s": 4.0, "limit_s": 11.0},
        },
    ]
    report = {"results": results, "once": {"cpu_s": 0.7}}
    text = table(results)
    assert text.splitlines()[0].startswith("| rules | CPU s/interval | bare CPU s | CPU ratio |")
    assert "|  1000 |          2.200 |      2.000 |      1.10 |" in text
    verdicts = {t["target"]: t for t in targets(report, 5.0)}
    assert verdicts["run --once --dry-run CPU, 1 rule"]["met"]
    assert verdicts["VmHWM idle (0 rules)"]["met"]
    assert verdicts["CPU per interval over the bare reads at 1000 rules"]["met"]  # at the limit
    assert verdicts["VmHWM at 1000 rules after 61 s"]["missed_by"] == "3 MiB (4%)"
    assert verdicts["mass event at 1000 rules (one interval + 1.5x bare)"]["met"]
    assert verdicts["reaction p95 at 1000 rules"]["met"]
    assert verdicts["writes per quiet tick at 1000 rules"]["met"]
    assert memory_lines(results) == [
        "resident memory at 1000 rules, MiB: file libcrypto.so.3 4.0, anonymous 36.0"
    ]
    results[1]["writes_per_tick"] = 2.0
    results[1]["mass_event"]["until_all_scaled_s"] = 12.0
    verdicts = {t["target"]: t for t in targets(report, 5.0)}
    assert verdicts["writes per quiet tick at 1000 rules"]["missed_by"] == "2"
    assert not verdicts["mass event at 1000 rules (one interval + 1.5x bare)"]["met"]


def test_rules_take_turns_over_the_sources(tmp_path: Path) -> None:
    class Fake:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def trigger(self, name: str) -> dict[str, str]:
            return {"type": self.kind, "object": name}

    path = write_rules(tmp_path / "r.yaml", ["a", "b", "c"], 5.0, [Fake("x"), Fake("y")])  # type: ignore[list-item]
    rules = yaml.safe_load(path.read_text())["rules"]
    assert [r["triggers"][0]["type"] for r in rules] == ["x", "y", "x"]
    assert [r["deployment"] for r in rules] == ["a", "b", "c"]


def test_every_bench_source_has_what_the_run_needs() -> None:
    for name, kind in BENCH_SOURCES.items():
        source = kind()
        assert source.type == name
        assert source.trigger("q1")["type"] == name


def test_the_all_types_rule_file_names_every_source_type_and_loads() -> None:
    from bench import all_types
    from eventscaler.config import parse_rules_text
    from eventscaler.sources import SOURCE_MODULES

    assert sorted(all_types.TRIGGERS) == sorted(SOURCE_MODULES)  # a new type needs its rule
    loaded = parse_rules_text(yaml.safe_dump(all_types.rules_document("bench", 5)), "all.yaml")
    assert loaded.problems == ()
    assert [r.name for r in loaded.rules] == all_types.rule_names()
    endpoints = [v for k, v in all_types.ENV.items() if k.startswith("BENCH_")]
    endpoints += [str(r.triggers[0].settings) for r in loaded.rules if r.triggers[0].type != "cron"]
    for endpoint in endpoints:  # loopback only
        assert re.search(r"127\.0\.0\.1|from_env='BENCH_", endpoint), endpoint


def test_every_source_type_has_a_readings_row() -> None:
    # A source registered in eventscaler.sources without a row in bench/readings.py fails here.
    assert sorted(READING_SOURCES) == sorted(SOURCE_MODULES)


def test_cpu_per_call_counts_cpu_not_waiting() -> None:
    def spin() -> None:
        started = time.process_time()
        while time.process_time() - started < 0.001:
            pass

    assert cpu_ms_per_call(spin, 5) >= 1.0
    assert cpu_ms_per_call(lambda: time.sleep(0.002), 5) < 0.5


def test_a_reading_is_waited_for_and_a_wrong_one_named() -> None:
    answers = iter([SourceError("BadResponse", "no statistics yet"), 3.0])

    def reader() -> float:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    wait_for_reading(Row("late", reader, lambda: None, "-", 3.0), timeout=10)
    with pytest.raises(RuntimeError, match="wrong: read 4.0, not 3.0"):
        wait_for_reading(Row("wrong", lambda: 4.0, lambda: None, "-", 3.0), timeout=0.1)


def test_readings_table_lines_and_their_json() -> None:
    rows = [Measured("redis", 0.15, 0.1, "redis-py LLEN"), Measured("mysql", problem="not here")]
    assert table_line(rows[0]) == "| redis | 0.150 | 0.100 | 1.50 | redis-py LLEN |"
    assert table_line(rows[1]) == "| mysql | - | - | - | not here |"
    text = render_json_rows(json.loads(json.dumps([as_json(r) for r in rows])))
    assert text.splitlines()[2:] == [table_line(r) for r in rows]


def test_the_cron_row_measures_the_daemons_reader() -> None:
    (row,) = measure_source("cron", reads=20, rounds=1)
    assert not row.problem and row.ours_ms and row.bare_ms
    assert row.bare_what == "croniter get_next of start and of end"
