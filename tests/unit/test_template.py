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
    assert set(functions) == {"IngestFunction", "IngestManagedFunction", "ApiFunction"}
    for name, f in functions.items():
        props = {**glob, **f["Properties"]}
        # Lambda Managed Instances allow up to 32 GiB per execution environment; standard Lambda 10,240 MB
        memory_cap = 32768 if "CapacityProviderConfig" in props else 10240
        assert param_max(props["MemorySize"]) <= memory_cap, name
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


@pytest.mark.parametrize("dockerfile", ["Dockerfile.lambda", "Dockerfile.gpu"])
def test_hadolint_passes(dockerfile: str) -> None:
    proc = subprocess.run([_tool("hadolint"), str(ROOT / dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


BATCH = ("BatchInstanceRole", "BatchInstanceProfile", "BatchComputeEnvironment", "BatchJobQueue", "BatchLogGroup",
         "BatchExecutionRole", "BatchJobRole", "BatchJobDefinition")  # fmt: skip


def test_batch_backfill_is_off_by_default_and_runs_one_shard_per_array_child() -> None:
    assert PARAMS["EnableBatch"]["Default"] == "false"
    for name in BATCH:
        assert RES[name]["Condition"] == "BatchEnabled", name
    container = RES["BatchJobDefinition"]["Properties"]["ContainerProperties"]
    command = " ".join(container["Command"])
    assert "python -m engine backfill" in command and '--shard "$AWS_BATCH_JOB_ARRAY_INDEX"' in command
    assert {"Type": "GPU", "Value": "1"} in container["ResourceRequirements"]
    assert {s["Name"] for s in container["Secrets"]} == {"QDRANT_URL", "QDRANT_API_KEY"}
    # two frame slots of the largest page (max_page_pixels RGB) fit in /dev/shm (issue 23 item 9)
    from engine.config import Settings

    assert container["LinuxParameters"]["SharedMemorySize"] << 20 >= 2 * 3 * Settings().max_page_pixels
    statements = RES["BatchJobRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    actions = {a for st in statements for a in st["Action"]}
    assert {a for a in actions if a.startswith("s3:")} == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:PutObject",
    }  # no deletes, no *
    # DynamoDB only on the membership table (its claims), item-level actions only
    (dynamo,) = [st for st in statements if any(a.startswith("dynamodb:") for a in st["Action"])]
    assert dynamo["Resource"] == {"Fn::GetAtt": ["MembershipTable", "Arn"]} and "*" not in str(
        dynamo["Action"]
    )
    assert actions - {a for a in actions if a.startswith(("s3:", "dynamodb:"))} == set()
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["MEMBERSHIP_TABLE"] == {"Ref": "MembershipTable"}
    (put,) = [st for st in statements if st["Action"] == ["s3:PutObject"]]
    assert put["Resource"]["Fn::Sub"].endswith("/derived/*")


def test_template_lints_with_batch_enabled(tmp_path: Path) -> None:
    text = (ROOT / "template.yaml").read_text()
    enabled = re.sub(r'(  EnableBatch:\n    Type: String\n    Default: )"false"', r'\1"true"', text)
    enabled = re.sub(
        r'(  BatchSubnetIds:\n    Type: CommaDelimitedList\n    Default: )""',
        r'\1"subnet-0123456789abcdef0"',
        enabled,
    )
    enabled = re.sub(
        r'(  BatchSecurityGroupIds:\n    Type: CommaDelimitedList\n    Default: )""',
        r'\1"sg-0123456789abcdef0"',
        enabled,
    )
    assert (
        enabled.count('"true"') > text.count('"true"') and "subnet-0123" in enabled and "sg-0123" in enabled
    )
    path = tmp_path / "template-batch.yaml"
    path.write_text(enabled)
    proc = subprocess.run([_tool("cfn-lint"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------- image build (issue 11)
DOCKERFILE = (ROOT / "Dockerfile.lambda").read_text()


def dockerfile_args() -> dict[str, str | None]:
    """ARG name → default (None when the ARG has no default), over every stage."""
    out: dict[str, str | None] = {}
    for name, default in re.findall(r"^ARG (\w+)(?:=(.*))?$", DOCKERFILE, flags=re.M):
        out[name] = default.strip('"') if default else None
    return out


def test_docker_build_args_and_dockerfile_args_are_in_step() -> None:
    """sam build passes Metadata.DockerBuildArgs; each must be an ARG, and every ARG without a safe default
    (the torch index, the model) must be passed, from a template parameter."""
    args = dockerfile_args()
    must_pass = {"TORCH_INDEX_URL", "MODEL_SOURCE", "MODEL_REVISION"}
    assert must_pass <= set(args)
    for name, f in of_type("AWS::Serverless::Function").items():
        build_args = f["Metadata"]["DockerBuildArgs"]
        assert set(build_args) <= set(args), f"{name}: DockerBuildArgs the Dockerfile does not declare"
        assert set(build_args) == must_pass, name
        for value in build_args.values():
            assert isinstance(value, dict) and value["Ref"] in PARAMS, f"{name}: {value} is not a parameter"
    assert args["TORCH_INDEX_URL"] is None  # no silent default: an empty index must fail the build
    torch_param = PARAMS[RES["ApiFunction"]["Metadata"]["DockerBuildArgs"]["TORCH_INDEX_URL"]["Ref"]]
    assert torch_param["Default"].rstrip("/").endswith("/whl/cpu")


def test_image_build_fails_loudly_without_the_cpu_torch_index() -> None:
    """Run the build stage's guard (the first RUN after ARG TORCH_INDEX_URL) as Docker would: bash -c."""
    guard = re.search(r"^RUN (if \[ -z \"\$\{TORCH_INDEX_URL\}\" \].*?fi)$", DOCKERFILE, flags=re.M | re.S)
    assert guard, "Dockerfile.lambda lost its TORCH_INDEX_URL guard"
    script = guard.group(1).replace("\\\n", "\n")
    empty = subprocess.run(
        ["bash", "-c", script], env={"TORCH_INDEX_URL": ""}, capture_output=True, text=True
    )
    assert empty.returncode == 1 and "TORCH_INDEX_URL" in empty.stderr and "CUDA" in empty.stderr
    given = subprocess.run(
        ["bash", "-c", script],
        env={"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"},
        capture_output=True,
        text=True,
    )
    assert given.returncode == 0, given.stderr


def test_image_base_is_amazon_linux_2023_and_matches_the_platform_check() -> None:
    """The base's Python and the platform check's Python are the same; python3.11 is Amazon Linux 2."""
    base = dockerfile_args()["LAMBDA_BASE"]
    assert base and base.startswith("public.ecr.aws/lambda/python:")
    version = base.rsplit(":", 1)[1]
    assert version in {"3.12", "3.13"}, f"{base} is not an Amazon Linux 2023 (glibc 2.34) Lambda base"
    check = (ROOT / "infra" / "check_image_deps.sh").read_text()
    assert f"IMAGE_PYTHON=${{IMAGE_PYTHON:-{version}}}" in check
    assert "IMAGE_PLATFORM=${IMAGE_PLATFORM:-x86_64-manylinux_2_34}" in check
    assert "infra/check_image_deps.sh" in (ROOT / "Makefile").read_text()
    requires = re.search(r'requires-python = "([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert requires
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(requires.group(1))
    assert "3.11" in spec and version in spec  # the local Python here and the image's
    assert "compileall" in DOCKERFILE and "PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE


def test_llm_keys_come_from_secrets_and_bedrock_is_scoped() -> None:
    api = RES["ApiFunction"]["Properties"]
    env = {**T["Globals"]["Function"]["Environment"]["Variables"], **api["Environment"]["Variables"]}
    for name in env:
        assert not re.search(r"(API_KEY|SECRET|TOKEN|PASSWORD)$", name), f"{name} looks like a plain secret"
    assert "DOCVISION_LLM_API_KEY_REF" in env and "secret:" in json.dumps(env["DOCVISION_LLM_API_KEY_REF"])
    policies = json.dumps(api["Policies"])
    assert '"Resource": "*"' not in policies
    assert "foundation-model/${LlmModel}" in policies and "bedrock:*" not in policies
    assert api["ReservedConcurrentExecutions"] == {"Ref": "ApiReservedConcurrency"}
    ingest_env = RES["IngestFunction"]["Properties"]["Environment"]["Variables"]
    assert not any(
        k.startswith("DOCVISION_LLM")
        for k in {**T["Globals"]["Function"]["Environment"]["Variables"], **ingest_env}
    )


def test_deletes_reach_the_ingest_queue() -> None:
    configs = RES["DocumentsBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    events = {c["Event"]: c for c in configs}
    assert {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"} <= set(events)
    removed = events["s3:ObjectRemoved:*"]
    assert removed["Queue"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
    assert {"Name": "prefix", "Value": "raw/"} in removed["Filter"]["S3Key"]["Rules"]


def test_ingest_may_delete_derived_objects_of_removed_documents() -> None:
    policies = RES["IngestFunction"]["Properties"]["Policies"]
    actions = {a for p in policies if "Statement" in p for s in p["Statement"] for a in s["Action"]}
    assert {"s3:PutObject", "s3:DeleteObject"} <= actions


def test_the_final_stage_takes_the_dependencies_without_the_bake_only_packages() -> None:
    """peft (LoRA merging, model stage) and accelerate (only peft needs it) are pruned from the runtime tree by
    infra/prune_dists.py, the same script the sandbox test runs on its copy of the tree."""
    assert re.search(r"^FROM build AS runtime-deps$", DOCKERFILE, flags=re.M)
    assert "RUN python /src/infra/prune_dists.py /opt/deps peft accelerate" in DOCKERFILE
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert "COPY --from=runtime-deps /opt/deps/ " in final and "--from=build /opt/deps" not in final
    model_stage = DOCKERFILE.split("FROM build AS model", 1)[1].split("\nFROM ", 1)[0]
    assert "prune_dists" not in model_stage  # the bake keeps peft
    sandbox = (ROOT / "tests" / "integration" / "test_lambda_sandbox.py").read_text()
    assert 'prune(tmp, ["peft", "accelerate"])' in sandbox


# ------------------------------------------------------------- Lambda Managed Instances profile (issue 25)
def _with_managed_instances(text: str) -> str:
    on = re.sub(r"(  IngestCompute:\n    Type: String\n    Default: )standard", r"\1managed-instances", text)
    on = re.sub(
        r'(  ManagedSubnetIds:\n    Type: CommaDelimitedList\n    Default: )""',
        r'\1"subnet-0123456789abcdef0"',
        on,
    )
    on = re.sub(
        r'(  ManagedSecurityGroupIds:\n    Type: CommaDelimitedList\n    Default: )""',
        r'\1"sg-0123456789abcdef0"',
        on,
    )
    assert (
        on.count("managed-instances") > text.count("managed-instances")
        and "subnet-0123" in on
        and "sg-0123" in on
    )
    return on


def _translate(text: str) -> dict:
    """The SAM transform CloudFormation runs at deploy (the same library, offline), with image URIs filled in
    as `sam deploy` does after pushing."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse(text)
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/docvision:test"

    class NoManagedPolicies:
        def load(self) -> dict:
            return {}

    import os

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(template, {}, NoManagedPolicies())


def test_managed_instances_profile_is_off_by_default() -> None:
    assert PARAMS["IngestCompute"]["Default"] == "standard"
    managed = {k for k, v in RES.items() if v.get("Condition") == "IngestOnManagedInstances"}
    assert {"IngestCapacityProvider", "IngestManagedFunction", "IngestCapacityOperatorRole"} <= managed
    assert RES["IngestFunction"]["Condition"] == "IngestOnStandardLambda"
    # the same handler, trigger, permissions and image as the standard ingest function
    std, lmi = RES["IngestFunction"], RES["IngestManagedFunction"]
    for key in ("ImageConfig", "Events", "Policies"):
        assert std["Properties"][key] == lmi["Properties"][key], key
    assert std["Metadata"] == lmi["Metadata"]


def test_managed_instances_profile_translates_to_16_vcpu_one_request_per_environment(tmp_path: Path) -> None:
    cfn = _translate(_with_managed_instances((ROOT / "template.yaml").read_text()))
    res = cfn["Resources"]
    fn = res["IngestManagedFunction"]["Properties"]
    cp = fn["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
    assert cp["CapacityProviderArn"] == {"Fn::GetAtt": ["IngestCapacityProvider", "Arn"]}
    assert cp["PerExecutionEnvironmentMaxConcurrency"] == 1
    assert fn["MemorySize"] / 1024 / cp["ExecutionEnvironmentMemoryGiBPerVCpu"] == 16  # vCPU per environment
    # LMI runs published versions: the SQS trigger must target the alias, not $LATEST
    (esm,) = [
        r
        for r in res.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping" and r.get("Condition") == "IngestOnManagedInstances"
    ]
    assert esm["Properties"]["FunctionName"] == {"Ref": "IngestManagedFunctionAliaslive"}
    provider = res["IngestCapacityProvider"]["Properties"]
    assert provider["InstanceRequirements"]["AllowedInstanceTypes"] == {"Ref": "ManagedInstanceTypes"}
    amx_families = ("c7i.", "m7i.", "r7i.", "c8i.", "m8i.")
    assert all(t.startswith(amx_families) for t in PARAMS["ManagedInstanceTypes"]["Default"].split(","))
    # the alarms follow whichever ingest function exists
    dims = res["IngestErrorsAlarm"]["Properties"]["Dimensions"][0]["Value"]
    assert dims == {
        "Fn::If": ["IngestOnManagedInstances", {"Ref": "IngestManagedFunction"}, {"Ref": "IngestFunction"}]
    }
    path = tmp_path / "template-lmi.yaml"
    path.write_text(_with_managed_instances((ROOT / "template.yaml").read_text()))
    proc = subprocess.run([_tool("cfn-lint"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_managed_instances_without_a_network_is_refused_by_a_rule() -> None:
    rule = T["Rules"]["ManagedInstancesNeedNetwork"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "IngestCompute"}, "managed-instances"]}
    asserted = json.dumps(rule["Assertions"])
    assert "ManagedSubnetIds" in asserted and "ManagedSecurityGroupIds" in asserted
