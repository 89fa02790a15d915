"""Checks for deploy/: Prometheus alert rules and their unit tests, the scrape config (scraped targets
get the `worker` label pushed series carry), and the Grafana dashboard (every PromQL expression parses,
uses only metrics that docs/design.md defines, and is keyed by `worker`, not by the scrape target).

Needs `promtool` on PATH (Debian/Ubuntu: `apt-get install -y prometheus`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
SCRAPE = PROM_DIR / "scrape.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "comfy-worker.json"

# Series that Prometheus itself produces for every target, allowed besides docs/design.md's metrics.
PROMETHEUS_SERIES = {"up"}
EXPECTED_ALERTS = {
    "ComfyWorkerFailed",
    "ComfyWorkerNotReady",
    "ComfyUIRestartLoop",
    "ComfyWorkerGPUMemoryNearlyFull",
    "ComfyWorkerJobFailureRatioHigh",
    "ComfyWorkerScrapeDown",
    "ComfyWorkerGone",
    "ComfyWorkerPushgatewayDown",
}
# About the Pushgateway itself, so it names the gateway (instance) rather than a worker.
GATEWAY_ALERTS = {"ComfyWorkerPushgatewayDown"}
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


# --------------------------------------------------------------------------- helpers


def find_promtool() -> str:
    """promtool's path; fails the calling test (not skips it) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH. Install Debian's `prometheus` package "
            "(`apt-get install -y prometheus`), which provides promtool.",
            pytrace=False,
        )
    return path


def run_promtool(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def design_metrics() -> dict[str, str]:
    """Metric name -> type from the tables in docs/design.md's "## Metrics" section, with the
    `_bucket`/`_sum`/`_count` series of histograms. Expands the shorthand
    "`comfy_worker_gpu_memory_total_bytes` / `_used_bytes`" into full names."""
    text = DESIGN.read_text(encoding="utf-8")
    section = re.search(r"^## Metrics.*?(?=^## |\Z)", text, re.M | re.S)
    assert section, "docs/design.md has no '## Metrics' section"
    metrics: dict[str, str] = {}
    for line in section.group(0).splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        names = re.findall(r"`([A-Za-z_:][A-Za-z0-9_:]*)`", cells[0])
        kind = cells[1].split()[0] if cells[1] else ""
        first = None
        for name in names:
            if name.startswith("_"):
                assert first, f"suffix {name} without a full name before it: {line}"
                stem = first.split("_")[: -(len(name.split("_")) - 1)]
                name = "_".join(stem) + name
            else:
                first = name
            metrics[name] = kind
            if kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    metrics[name + suffix] = "histogram series"
    return metrics


def metric_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (Grafana variables allowed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)  # ranges, subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)  # label lists
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        if word.lower() in PROMQL_KEYWORDS or re.match(r"\s*\(", s[m.end() :]):
            continue  # keyword, or function / aggregation call
        names.add(word)
    return names


GRAFANA_DURATIONS = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?(?![A-Za-z0-9_])")
GRAFANA_SECONDS = re.compile(r"\$\{?__(?:interval_ms|range_s|range_ms)\}?")
GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+(?::\w+)?\]\]")


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's template variables with values promtool can parse."""
    expr = GRAFANA_SECONDS.sub("300", expr)
    expr = GRAFANA_DURATIONS.sub("5m", expr)
    return GRAFANA_VARS.sub("x", expr)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression in the dashboard: panel targets (also inside rows),
    annotations, and the series selectors of label_values() template queries."""
    found: list[tuple[str, str]] = []

    def walk(node, where: str):
        if isinstance(node, dict):
            here = where
            if "title" in node and isinstance(node["title"], str):
                here = f"{where}/{node['title']}"
            elif "name" in node and isinstance(node["name"], str):
                here = f"{where}/{node['name']}"
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append((f"{here} ({node.get('refId', '-')})", value))
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    board = dashboard()
    walk({k: v for k, v in board.items() if k != "templating"}, "")
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*", query, re.S)
        if m:
            found.append((f"templating/{var['name']}", m.group(1)))
        elif query.strip():
            found.append((f"templating/{var['name']}", query))
    return found


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def check_promql(promtool: str, exprs: list[tuple[str, str]], tmp_path: Path) -> None:
    """Parse every expression with promtool by writing them as recording rules."""
    rules = [{"record": f"check:expr_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)]
    path = tmp_path / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}, sort_keys=False))
    res = run_promtool(promtool, "check", "rules", str(path))
    if res.returncode != 0:
        listing = "\n".join(f"  expr_{i} [rule {i + 1}] {where}: {e!r}" for i, (where, e) in enumerate(exprs))
        pytest.fail(f"promtool rejects an expression:\n{res.stdout}{res.stderr}\nexpressions:\n{listing}")


# --------------------------------------------------------------------------- helpers' own checks


def test_design_metrics_parsed():
    metrics = design_metrics()
    assert metrics["comfy_worker_ready"] == "gauge"
    assert metrics["comfy_worker_jobs_total"] == "counter"
    for name in (
        "comfy_worker_gpu_memory_used_bytes",
        "comfy_worker_gpu_memory_free_bytes",
        "comfy_worker_gpu_torch_memory_free_bytes",
        "comfy_worker_queue_pending",
        "comfy_worker_job_duration_seconds_bucket",
    ):
        assert name in metrics


def test_metric_name_extraction():
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{instance=~"$instance", x="y z"}'
        "[$__rate_interval]))) / on(instance) group_left(gpu) b_total offset 5m > bool 1e3 "
        'and ignoring(state) c{state="failed"} == 1 unless time() - d'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d"}
    assert metric_names("max without (source) (u / t) > 0.95") == {"u", "t"}


def test_promql_check_catches_errors(tmp_path):
    promtool = find_promtool()
    with pytest.raises(pytest.fail.Exception):
        check_promql(promtool, [("bad", "sum(rate(x[5m])")], tmp_path)
    check_promql(promtool, [("ok", 'rate(x{i=~"$instance"}[$__rate_interval])')], tmp_path)


# --------------------------------------------------------------------------- Prometheus rules


def test_promtool_check_rules():
    promtool = find_promtool()
    res = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_test_rules():
    promtool = find_promtool()
    res = run_promtool(promtool, "test", "rules", ALERTS_TEST.name, cwd=PROM_DIR)
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_check_scrape_config():
    promtool = find_promtool()
    res = run_promtool(promtool, "check", "config", SCRAPE.name, cwd=PROM_DIR)
    assert res.returncode == 0, res.stdout + res.stderr


def scrape_jobs() -> dict[str, dict]:
    return {job["job_name"]: job for job in yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))["scrape_configs"]}


def test_scraped_targets_get_a_worker_label(tmp_path):
    """The relabelling in scrape.yml, run by promtool: a target's own `worker` label, else its host."""
    promtool = find_promtool()
    config = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    config.pop("rule_files")
    job = scrape_jobs()["comfy-worker"]
    job["static_configs"] = [
        {"targets": ["203.0.113.10:8081"], "labels": {"worker": "abc123xyz"}},
        {"targets": ["worker-2.example.internal:8081", "[2001:db8::1]:8081", "bare-host"]},
    ]
    config["scrape_configs"] = [job]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    # Static targets are there at once; promtool would otherwise wait 30 s for more.
    res = run_promtool(promtool, "check", "service-discovery", "--timeout=3s", str(path), "comfy-worker")
    assert res.returncode == 0, res.stdout + res.stderr
    workers = {t["labels"]["instance"]: t["labels"].get("worker") for t in json.loads(res.stdout)}
    assert workers == {
        "203.0.113.10:8081": "abc123xyz",
        "worker-2.example.internal:8081": "worker-2.example.internal",
        "[2001:db8::1]:8081": "[2001:db8::1]",
        "bare-host:80": "bare-host",
    }


def test_pushgateway_job_keeps_the_pushed_labels():
    job = scrape_jobs()["comfy-worker-pushgateway"]
    assert job["honor_labels"] is True


def test_alert_rules_shape():
    rules = alert_rules()
    assert {r.get("alert") for r in rules} >= EXPECTED_ALERTS
    for rule in rules:
        name = rule.get("alert")
        assert name, f"only alerting rules belong in {ALERTS.name}: {rule}"
        assert rule.get("for"), f"{name}: no for:"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{name}: no summary"
        description = annotations.get("description", "")
        named = "$labels.instance" if name in GATEWAY_ALERTS else "$labels.worker"
        assert named in description, f"{name}: description lacks {{{{ {named} }}}}"
        assert "$value" in description, f"{name}: description lacks the value"


def grouping_labels(expr: str) -> set[str]:
    """Labels named in the by/without/on/ignoring clauses of an expression."""
    found = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^()]*)\)", expr)
    return {label.strip() for labels in found for label in labels.split(",") if label.strip()}


def test_alerts_are_keyed_by_worker_not_by_scrape_target():
    for rule in alert_rules():
        labels = grouping_labels(rule["expr"])
        assert "instance" not in labels, f"{rule['alert']} groups by instance: pushed workers share the gateway's"
        if labels - {"source", "state"}:
            assert "worker" in labels, f"{rule['alert']} aggregates away the worker label: {sorted(labels)}"


def test_gauge_alerts_skip_gone_pushed_workers():
    """Frozen values of a worker killed without an orderly stop must not keep alerting (alerts_test.yml)."""
    for name in ("ComfyWorkerFailed", "ComfyWorkerNotReady", "ComfyWorkerGPUMemoryNearlyFull"):
        expr = next(rule["expr"] for rule in alert_rules() if rule["alert"] == name)
        assert re.search(r"unless on \(job, worker\)\s*\(time\(\) - push_time_seconds", expr), name


def test_every_alert_has_firing_and_quiet_unit_tests():
    tests = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a not-firing test"


def test_alert_metrics_are_in_design():
    known = set(design_metrics()) | PROMETHEUS_SERIES
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']}: metrics not in docs/design.md: {sorted(unknown)}"


# --------------------------------------------------------------------------- Grafana dashboard


def test_dashboard_structure():
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert any(
        i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus" for i in board.get("__inputs", [])
    )
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["worker"]["type"] == "query"
    assert re.fullmatch(r"label_values\(comfy_worker_ready\{[^}]*\}, worker\)", variables["worker"]["definition"])
    panels = [p for p in board["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p.get("targets"), f"{p['title']}: no queries"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'worker=~"$worker"' in t["expr"], f"{p['title']}: query ignores $worker"
            assert "instance" not in grouping_labels(t["expr"]), f"{p['title']}: grouped by the scrape target"
            assert "{{instance}}" not in t.get("legendFormat", ""), f"{p['title']}: legend names the scrape target"


def test_dashboard_covers_required_panels():
    all_exprs = [e for _, e in dashboard_exprs()]
    exprs = " ".join(all_exprs)
    for metric in (
        "comfy_worker_ready",
        "comfy_worker_state",
        "comfy_worker_program_restarts_total",
        "comfy_worker_gpu_memory_used_bytes",
        "comfy_worker_gpu_memory_total_bytes",
        "comfy_worker_queue_running",
        "comfy_worker_queue_pending",
        "comfy_worker_jobs_total",
        "comfy_worker_job_duration_seconds_bucket",
        "comfy_worker_comfyui_resident_memory_bytes",
        "comfy_worker_comfyui_cpu_seconds_total",
        "comfy_worker_nvml_available",
        "comfy_worker_output_bytes_total",
        "comfy_worker_job_phase_duration_seconds_sum",
        "comfy_worker_job_phase_duration_seconds_bucket",
        "comfy_worker_push_failures_total",
        "push_time_seconds",
    ):
        assert metric in exprs, f"no panel uses {metric}"
    phases = [e for e in all_exprs if "comfy_worker_job_phase_duration_seconds" in e]
    assert phases and all("phase" in grouping_labels(e) for e in phases), "the phase breakdown is not by phase"
    for q in ("0.5", "0.95", "0.99"):
        pattern = rf"histogram_quantile\(\s*{re.escape(q)}0*\s*,.*\bcomfy_worker_job_duration_seconds_bucket\b"
        assert any(re.search(pattern, e, re.S) for e in all_exprs), f"no job latency panel for quantile {q}"


def test_dashboard_exprs_parse(tmp_path):
    promtool = find_promtool()
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    check_promql(promtool, exprs, tmp_path)


def test_dashboard_metrics_are_in_design():
    known = set(design_metrics()) | PROMETHEUS_SERIES
    problems = []
    for where, expr in dashboard_exprs():
        unknown = metric_names(expr) - known
        if unknown:
            problems.append(f"{where}: {sorted(unknown)}")
    assert not problems, "metrics not in docs/design.md:\n" + "\n".join(problems)
