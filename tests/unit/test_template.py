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
    # no route without auth: the security of every method is chosen by ApiAuth (tests below); SAM's Auth property
    # would add its own and takes no conditions
    assert "Auth" not in api and api["MergeDefinitions"] is True
    for path, item in api["DefinitionBody"]["paths"].items():
        for op in item.values():
            assert op["security"] == {"Fn::If": ["ApiAuthIam", [{"AWS_IAM": []}], [{"api_key": []}]]}, path
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


@pytest.mark.slow  # cfn-lint / sam translate: 30-60 s on 2 vCPUs
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


@pytest.mark.slow  # cfn-lint / sam translate: 30-60 s on 2 vCPUs
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
    """sam build passes Metadata.DockerBuildArgs; each must be an ARG, and every ARG that decides what is built
    (the base, the torch index and whether CUDA wheels may stay, the model) must be passed, from a parameter."""
    args = dockerfile_args()
    must_pass = {"LAMBDA_BASE", "TORCH_INDEX_URL", "ALLOW_CUDA_TORCH", "MODEL_SOURCE", "MODEL_REVISION"}
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
    # the template's defaults are the Dockerfile's: a plain `docker build` and `sam build` build the same image
    assert PARAMS["LambdaBase"]["Default"] == args["LAMBDA_BASE"]
    assert PARAMS["AllowCudaTorch"]["Default"] == args["ALLOW_CUDA_TORCH"] == "0"


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


def test_image_base_is_debian_bookworm_like_the_tests_and_matches_the_platform_check() -> None:
    """The image runs Debian 12's Python 3.11 and its LibreOffice/Tesseract, as the tests and CI do (issue 21):
    the base, the local stand-in, the platform check and the project's Python pins agree."""
    base = dockerfile_args()["LAMBDA_BASE"]
    assert base == "public.ecr.aws/docker/library/debian:bookworm-slim"
    stand_in = (ROOT / "infra" / "make_base.sh").read_text()
    assert "SUITE=${SUITE:-bookworm}" in stand_in and "standin" in stand_in and "docker import" in stand_in
    check = (ROOT / "infra" / "check_image_deps.sh").read_text()
    assert "IMAGE_PYTHON=${IMAGE_PYTHON:-3.11}" in check  # bookworm's python3
    assert "IMAGE_PLATFORM=${IMAGE_PLATFORM:-x86_64-manylinux_2_36}" in check  # bookworm's glibc
    assert "infra/check_image_deps.sh" in (ROOT / "Makefile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    requires = re.search(r'requires-python = "([^"]+)"', pyproject)
    assert requires and 'python_version = "3.11"' in pyproject
    from packaging.specifiers import SpecifierSet

    assert "3.11" in SpecifierSet(requires.group(1))
    assert (
        "awslambdaric" in pyproject and '"-m", "awslambdaric"' in DOCKERFILE
    )  # the runtime interface client
    # Debian's maintained packages, the same list `make setup` installs for the tests (no downloaded bundle)
    makefile = (ROOT / "Makefile").read_text()
    for pkg in ("libreoffice-writer-nogui", "tesseract-ocr", "fonts-noto-cjk", "poppler-utils"):
        assert pkg in DOCKERFILE and pkg in makefile, pkg
    assert "curl" not in DOCKERFILE and "dnf" not in DOCKERFILE and "LIBREOFFICE_VERSION" not in DOCKERFILE
    assert "compileall" in DOCKERFILE and "PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE
    assert not DOCKERFILE.startswith(
        "# syntax="
    )  # the legacy builder builds it offline (BuildKit would pull a frontend)


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
    app = DOCKERFILE.split("FROM build AS app", 1)[1].split("\nFROM ", 1)[0]
    assert (
        "RUN python3 /src/infra/prune_dists.py /opt/venv/lib/python3.*/site-packages peft accelerate" in app
    )
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert "COPY --from=app /opt/venv/ " in final and "--from=build" not in final
    assert "RUN " not in final  # one layer per tree: no chmod/compile copy of the trees in the final stage
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


@pytest.mark.slow  # cfn-lint / sam translate: 30-60 s on 2 vCPUs
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


# ------------------------------------------------------------------- API auth: IAM default, API key option (issue 23)
def _evaluate(node, params: dict, conditions: dict):
    """CloudFormation's conditions on a translated template, for given parameter values: Fn::If picks its branch
    (AWS::NoValue drops the key), the rest is left as it is."""
    if isinstance(node, list):
        out = [_evaluate(v, params, conditions) for v in node]
        return [v for v in out if v != {"Ref": "AWS::NoValue"}]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Fn::If"}:
        name, yes, no = node["Fn::If"]
        return _evaluate(yes if conditions[name] else no, params, conditions)
    out = {k: _evaluate(v, params, conditions) for k, v in node.items()}
    return {k: v for k, v in out.items() if v != {"Ref": "AWS::NoValue"}}


def _value(x, params: dict):
    """A condition operand: a literal, a parameter (a list parameter is a list) or Fn::Join of one."""
    if isinstance(x, dict) and "Ref" in x:
        return params[x["Ref"]]
    if isinstance(x, dict) and "Fn::Join" in x:
        sep, items = x["Fn::Join"]
        return sep.join(_value(items, params))
    return x


def _condition(expr, params: dict, conditions: dict, raw: dict) -> bool:
    if "Condition" in expr:
        name = expr["Condition"]
        if name not in conditions:
            conditions[name] = _condition(raw[name], params, conditions, raw)
        return conditions[name]
    ((fn, args),) = expr.items()
    if fn == "Fn::Equals":
        return str(_value(args[0], params)) == str(_value(args[1], params))
    if fn == "Fn::Not":
        return not _condition(args[0], params, conditions, raw)
    if fn == "Fn::And":
        return all(_condition(a, params, conditions, raw) for a in args)
    if fn == "Fn::Or":
        return any(_condition(a, params, conditions, raw) for a in args)
    raise AssertionError(f"condition function {fn} not evaluated here")


def _deployed(**overrides: str) -> dict:
    """The template as CloudFormation would create it with these parameter values: the SAM transform (offline),
    then conditions applied (resources and outputs whose condition is false are gone)."""
    sys.path.insert(0, str(ROOT / "infra"))
    from template_variant import with_defaults

    cfn = _translate(with_defaults((ROOT / "template.yaml").read_text(), overrides))
    params = {k: v.get("Default", "") for k, v in cfn["Parameters"].items()} | overrides
    for k, v in cfn["Parameters"].items():
        if v["Type"] == "CommaDelimitedList":
            params[k] = [x for x in str(params[k]).split(",") if x]
    raw = cfn["Conditions"]
    conditions: dict[str, bool] = {}
    for name in raw:
        _condition({"Condition": name}, params, conditions, raw)

    def kept(section: dict) -> dict:
        return {k: v for k, v in section.items() if conditions.get(v.get("Condition", ""), True)}

    return {
        "Resources": _evaluate(kept(cfn["Resources"]), params, conditions),
        "Outputs": _evaluate(kept(cfn.get("Outputs", {})), params, conditions),
    }


API_ROUTES = {
    (e["Properties"]["Method"].lower(), e["Properties"]["Path"])
    for e in RES["ApiFunction"]["Properties"]["Events"].values()
}
KEY_RESOURCES = {"AWS::ApiGateway::ApiKey", "AWS::ApiGateway::UsagePlan", "AWS::ApiGateway::UsagePlanKey"}


def _methods(deployed: dict) -> dict[tuple[str, str], dict]:
    (api,) = [r for r in deployed["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    body = api["Properties"]["Body"]
    return {(m, path): op for path, item in body["paths"].items() for m, op in item.items()} | {
        ("securityDefinitions", ""): body["securityDefinitions"]
    }


def test_api_auth_defaults_to_iam_sigv4_on_every_method() -> None:
    assert PARAMS["ApiAuth"]["Default"] == "iam" and PARAMS["ApiAuth"]["AllowedValues"] == ["iam", "api-key"]
    deployed = _deployed()
    methods = _methods(deployed)
    sigv4 = methods.pop(("securityDefinitions", ""))["AWS_IAM"]
    assert sigv4["x-amazon-apigateway-authtype"] == "awsSigv4" and sigv4["name"] == "Authorization"
    assert set(methods) == API_ROUTES  # every route, none without a Lambda integration
    for route, op in methods.items():
        assert op["security"] == [{"AWS_IAM": []}], route
        assert op["x-amazon-apigateway-integration"]["type"] == "aws_proxy", route
        # no integration credentials: API Gateway invokes the function under its resource policy, so a caller
        # needs execute-api:Invoke only (SAM's CALLER_CREDENTIALS would also demand lambda:InvokeFunction)
        assert "credentials" not in op["x-amazon-apigateway-integration"], route
    res = deployed["Resources"]
    assert not {r["Type"] for r in res.values()} & KEY_RESOURCES
    assert "ApiKeyId" not in deployed["Outputs"]
    (statement,) = res["ApiCallerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (
        statement["Action"] == "execute-api:Invoke"
        and "${Api}/${Stage}/*/*" in statement["Resource"]["Fn::Sub"]
    )
    assert deployed["Outputs"]["ApiCallerPolicyArn"]["Value"] == {"Ref": "ApiCallerPolicy"}
    stage = res["ApiStage"]["Properties"]["MethodSettings"][0]
    assert (
        stage["ThrottlingRateLimit"] == 20 and stage["ThrottlingBurstLimit"] == 40
    )  # throttled without a plan


def test_api_key_mode_keeps_the_usage_plan_key_on_every_method() -> None:
    deployed = _deployed(ApiAuth="api-key")
    methods = _methods(deployed)
    key = methods.pop(("securityDefinitions", ""))["api_key"]
    assert key == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    assert set(methods) == API_ROUTES
    for route, op in methods.items():
        assert op["security"] == [{"api_key": []}], route
    res = deployed["Resources"]
    assert {r["Type"] for r in res.values()} >= KEY_RESOURCES and "ApiCallerPolicy" not in res
    plan = res["ApiUsagePlan"]["Properties"]
    assert plan["ApiStages"] == [{"ApiId": {"Ref": "Api"}, "Stage": {"Ref": "ApiStage"}}]
    assert plan["Throttle"] == {"RateLimit": 20, "BurstLimit": 40} and plan["Quota"]["Period"] == "MONTH"
    link = res["ApiUsagePlanKey"]["Properties"]
    assert link == {
        "KeyId": {"Ref": "ApiApiKey"},
        "KeyType": "API_KEY",
        "UsagePlanId": {"Ref": "ApiUsagePlan"},
    }
    assert deployed["Outputs"]["ApiKeyId"]["Value"] == {"Ref": "ApiApiKey"}
    assert "ApiCallerPolicyArn" not in deployed["Outputs"]


def test_api_key_mode_lints_and_make_lint_checks_it(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "infra"))
    from template_variant import with_defaults

    path = tmp_path / "template-api-key.yaml"
    path.write_text(with_defaults((ROOT / "template.yaml").read_text(), {"ApiAuth": "api-key"}))
    proc = subprocess.run([_tool("cfn-lint"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lint = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "template_variant.py ApiAuth=api-key" in lint
    assert lint.count("sam validate --lint") == 2 and lint.count("cfn-lint") == 2


def test_api_document_prefixes_reach_the_handler() -> None:
    env = RES["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env["DOCVISION_API_KEY_PREFIXES"] == {"Ref": "ApiDocumentPrefixes"}
    assert PARAMS["ApiDocumentPrefixes"]["Default"] == "raw/"


def test_gpu_image_shares_the_lambda_image_stages_verbatim() -> None:
    """Dockerfile.gpu's os, build, model and app stages are Dockerfile.lambda's (one base, one package set, one
    dependency tree per torch index; cached layers shared); only the final stage differs (issue 21 item 4)."""
    gpu = (ROOT / "Dockerfile.gpu").read_text()
    marker = "# " + "-" * 94

    def stages(text: str) -> str:
        body = text[text.index(marker + " os") :]
        return body[: body.index(marker + " final")]

    assert stages(gpu) == stages(DOCKERFILE)
    final = gpu.rsplit("\nFROM ", 1)[1]
    assert "awslambdaric" not in final and "USER 10001" in final and "PATH=/opt/venv/bin" in final
    assert gpu.count("ARG LAMBDA_BASE=") == 1 and dockerfile_args()["LAMBDA_BASE"] in gpu
