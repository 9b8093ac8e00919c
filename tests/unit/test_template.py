"""template.yaml, Dockerfile.lambda and events/ checked as code: limits the linters do not catch, alarm
wiring, metric names that must match what the handlers emit, and the linters themselves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
T = cfn_yaml.load(str(ROOT / "template.yaml"))
RES = T["Resources"]
PARAMS = T["Parameters"]


def of_type(kind: str) -> dict:
    return {k: v for k, v in RES.items() if v["Type"] == kind}


def param_max(value) -> int:
    if isinstance(value, dict) and "Ref" in value:
        p = PARAMS[value["Ref"]]
        assert "MaxValue" in p, f"parameter {value['Ref']} needs a MaxValue"
        return max(int(p["MaxValue"]), int(p["Default"]))
    return int(value)


def test_lambda_limits_the_linters_do_not_check() -> None:
    functions = of_type("AWS::Serverless::Function")
    glob = T["Globals"]["Function"]
    assert len(functions) == 2
    for name, f in functions.items():
        props = {**glob, **f["Properties"]}
        assert param_max(props["MemorySize"]) <= 10240, name
        assert param_max(props["Timeout"]) <= 900, name
        assert param_max(props["EphemeralStorage"]["Size"]) <= 10240, name
        assert props["PackageType"] == "Image" and f["Metadata"]["Dockerfile"] == "Dockerfile.lambda"
        module, func = props["ImageConfig"]["Command"][0].rsplit(".", 1)
        assert (ROOT / (module.replace(".", "/") + ".py")).exists() and f"def {func}(" in (
            ROOT / (module.replace(".", "/") + ".py")
        ).read_text()


def test_every_alarm_notifies_the_sns_topic() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")
    assert len(alarms) >= 10
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlertsTopic"}], name
    metrics = {a["Properties"]["MetricName"] for a in alarms.values()}
    assert {
        "Errors",
        "Throttles",
        "Duration",
        "ApproximateNumberOfMessagesVisible",
        "ExtractionsFailed",
        "QualityScore",
        "UpsertFailures",
    } <= metrics
    sub = RES["AlertsEmail"]
    assert sub["Condition"] == "HasAlarmEmail" and sub["Properties"]["TopicArn"] == {"Ref": "AlertsTopic"}
    duration = [a for a in alarms.values() if a["Properties"]["MetricName"] == "Duration"]
    assert all(a["Properties"]["Threshold"] <= 900_000 * 0.95 for a in duration)


def test_custom_metric_alarms_watch_metrics_the_handlers_emit() -> None:
    code = "".join(p.read_text() for p in (ROOT / "handlers").glob("*.py"))
    emitted = set(re.findall(r'name="(\w+)"', code)) | {"UpsertFailures"}
    for alarm in of_type("AWS::CloudWatch::Alarm").values():
        p = alarm["Properties"]
        if p["Namespace"] == "DocVision":
            assert p["MetricName"] in emitted, p["MetricName"]


def test_api_is_not_open_and_ingest_is_queued_with_a_dlq() -> None:
    api = RES["Api"]["Properties"]
    assert api["Auth"]["ApiKeyRequired"] is True and api["Auth"]["UsagePlan"]["CreateUsagePlan"] == "PER_API"
    ingest = RES["IngestFunction"]["Properties"]
    (event,) = ingest["Events"].values()
    assert event["Type"] == "SQS" and event["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    assert RES["IngestQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["IngestDLQ", "Arn"]
    }
    rules = RES["DocumentsBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"][0][
        "Filter"
    ]["S3Key"]["Rules"]
    assert {"Name": "prefix", "Value": "raw/"} in rules


def test_every_environment_variable_the_handlers_read_is_set() -> None:
    code = "".join(p.read_text() for p in (ROOT / "handlers").glob("*.py"))
    read = set(re.findall(r'os\.environ\["(\w+)"\](?!\s*=)', code))  # reads, not assignments
    glob_env = set(T["Globals"]["Function"]["Environment"]["Variables"])
    for f in of_type("AWS::Serverless::Function").values():
        env = glob_env | set(f["Properties"].get("Environment", {}).get("Variables", {}))
        missing = read - env - {"AWS_LAMBDA_FUNCTION_NAME", "INGEST_QUEUE_URL"}
        assert not missing, missing
    assert "INGEST_QUEUE_URL" in RES["IngestFunction"]["Properties"]["Environment"]["Variables"]


def test_sample_events_match_template_routes() -> None:
    routes = {
        (e["Properties"]["Method"].upper(), e["Properties"]["Path"])
        for e in RES["ApiFunction"]["Properties"]["Events"].values()
    }
    for path in (ROOT / "events").glob("*.json"):
        ev = json.loads(path.read_text())
        if "httpMethod" in ev:
            assert (ev["httpMethod"], ev["resource"]) in routes, path.name


def _tool(name: str) -> str:
    """A dev tool from the same environment as the running Python (CI need not have it on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is a dev dependency (make setup installs it)"
    return found


def test_cfn_lint_passes() -> None:
    proc = subprocess.run([_tool("cfn-lint"), str(ROOT / "template.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [_tool("hadolint"), str(ROOT / "Dockerfile.lambda")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
