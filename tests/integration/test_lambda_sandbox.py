"""The image's final stage, built without Docker and run like Lambda runs it.

The file tree is what Dockerfile.lambda's final stage holds: runtime dependencies installed with
`uv pip install --target` (as the build stage does), the code, the generated BAML client, the schemas,
a baked model, bytecode precompiled. Both handlers then run from that tree with the sample events inside
bubblewrap: a non-root uid, the whole filesystem read-only except a fresh /tmp, HOME=/tmp, the
AWS_LAMBDA_* variables set, no environment from the caller. AWS services: moto's server on 127.0.0.1.
(Local Python, not the image's 3.12: the layout and the sandbox are what is tested here.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
BUCKET = "docvision-documents"  # the sample events' bucket


def _bwrap_usable() -> str | None:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return "bubblewrap is not installed (make setup installs it: apt-get install bubblewrap)"
    probe = subprocess.run(
        [bwrap, "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--unshare-user", "--uid", "993", "true"],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"the kernel refuses the namespaces bubblewrap needs: {probe.stderr.strip()[:200]}"
    return None


def _tree(dest: Path) -> Path:
    """The final stage's tree (cached by the inputs' hash: installing the dependencies takes minutes)."""
    uv = shutil.which("uv") or str(REPO / ".stamps" / "bin" / "uv")
    h = hashlib.sha256(
        (REPO / "pyproject.toml").read_bytes() + (REPO / "infra" / "prune_dists.py").read_bytes()
    )
    for p in sorted(
        [*(REPO / "engine").rglob("*.py"), *(REPO / "handlers").glob("*.py"), *(REPO / "models").glob("*.py")]
    ):
        h.update(p.read_bytes())
    task = dest / f"task-{h.hexdigest()[:12]}"
    if (task / ".complete").exists():
        return task
    for old in dest.glob("task-*"):
        shutil.rmtree(old, ignore_errors=True)
    tmp = dest / ".building"
    if not (tmp / ".installed").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--target", str(tmp), "--python", sys.executable, str(REPO)],
            check=True, cwd=REPO,
        )  # fmt: skip
        from infra.prune_dists import prune

        prune(tmp, ["peft", "accelerate"])  # as Dockerfile.lambda's final stage: bake-only packages
        (tmp / ".installed").touch()
    for name in ("baml_client", "schemas"):
        shutil.rmtree(tmp / name, ignore_errors=True)
        shutil.copytree(REPO / name, tmp / name)
    from models.bake import bake

    bake(str(REPO / "models" / "tiny-colqwen2"), tmp / "model")
    # The image compiles the whole task root; here our code (the dependencies' thousands of files take
    # minutes on 2 cores, and a missing .pyc cannot be written in the sandbox anyway: it is recompiled in
    # memory, never written).
    for name in ("engine", "handlers", "models", "baml_client"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(tmp / name)], check=True)
    for p in tmp.rglob("*"):  # readable by the sandbox's other uid
        p.chmod(p.stat().st_mode | 0o444 | (0o111 if p.is_dir() else 0))
    (tmp / ".complete").touch()
    tmp.rename(task)
    return task


@pytest.fixture(scope="module")
def moto_url():
    from tests.fixtures.moto import moto_server

    with moto_server() as url:
        yield url


def _result(text: str) -> dict:
    """handlers.invoke prints the result indented after the handler's one-line JSON log records."""
    start = 0 if text.startswith("{\n") else text.index("\n{\n") + 1
    return json.loads(text[start:])


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.timeout(3000)  # first run installs the dependency tree (cached afterwards)
def test_both_handlers_run_from_the_image_tree_in_a_lambda_like_sandbox(
    moto_url: str, tmp_path: Path
) -> None:
    reason = _bwrap_usable()
    if reason:
        pytest.skip(reason)
    import boto3

    from tests.fixtures import documents as d

    task = _tree(REPO / ".stamps" / "sandbox")
    aws = {
        "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    }  # fmt: skip
    clients = {k: boto3.client(k, endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                               aws_secret_access_key="testing") for k in ("s3", "sqs", "dynamodb")}  # fmt: skip
    clients["s3"].create_bucket(Bucket=BUCKET)
    pdf = d.multipage_pdf(tmp_path / "m.pdf").read_bytes()
    clients["s3"].put_object(Bucket=BUCKET, Key="raw/shipping manifest.pdf", Body=pdf)  # s3-put.json's key
    queue = clients["sqs"].create_queue(QueueName="ingest")["QueueUrl"]
    dlq = clients["sqs"].create_queue(QueueName="ingest-dlq")["QueueUrl"]
    for name, key in (("idem", "id"), ("jobs", "job_id")):
        clients["dynamodb"].create_table(TableName=name, KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")  # fmt: skip
    clients["dynamodb"].create_table(TableName="membership", BillingMode="PAY_PER_REQUEST",  # the template's
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}])  # fmt: skip

    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    env = {
        **aws,
        # what Lambda sets, and what the template and Dockerfile.lambda set
        "AWS_LAMBDA_FUNCTION_NAME": "docvision-sandbox", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "4096",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/docvision-sandbox",
        "AWS_LAMBDA_LOG_STREAM_NAME": "sandbox", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "LAMBDA_TASK_ROOT": str(task), "LAMBDA_RUNTIME_DIR": "/var/runtime", "PYTHONPATH": str(task),
        "HOME": "/tmp", "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1", "HF_HOME": "/tmp/hf", "XDG_CACHE_HOME": "/tmp/.cache", "BAML_LOG": "warn",
        "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor", "POWERTOOLS_SERVICE_NAME": "docvision",
        "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_METRICS_NAMESPACE": "DocVisionSandbox",
        "DOCVISION_MODEL": str(task / "model"), "DOCVISION_STORE": f"s3://{BUCKET}/derived",
        "DOCVISION_INDEX_PATH": "/tmp/qdrant", "DOCVISION_WORK_DIR": "/tmp", "DOCVISION_SOFFICE": "soffice",
        "DOCVISION_SCHEMAS_DIR": str(task / "schemas"), "DOCUMENTS_BUCKET": BUCKET, "IDEMPOTENCY_TABLE": "idem",
        "JOBS_TABLE": "jobs", "MEMBERSHIP_TABLE": "membership", "INGEST_QUEUE_URL": queue, "INGEST_DLQ_URL": dlq,
        "DOCVISION_LAZY_VISION": "true",
        "DOCVISION_VERIFY_WEIGHTS": "size",
    }  # fmt: skip
    sandbox = ["bwrap", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev",
               "--unshare-user", "--uid", "993", "--gid", "990", "--unshare-pid", "--die-with-parent",
               "--clearenv", "--chdir", "/tmp"]  # fmt: skip
    # The fresh /tmp hides whatever lives under it (a checkout in /tmp, as CI's may be): show the task tree and
    # the events again at their own paths, read-only.
    for path in (task, EVENTS):
        sandbox += ["--ro-bind", str(path), str(path)]
    for k, v in env.items():
        sandbox += ["--setenv", k, v]
    # One sandbox = one container: ingest, then the API (search, health) on the same /tmp index, then a
    # report of what the run wrote (only /tmp can hold anything).
    script = (
        f"set -e; cd /tmp; id -u > /tmp/uid; "
        f"{python} -S -m handlers.invoke ingest {EVENTS / 's3-put.json'} > /tmp/ingest.json; "
        f"{python} -S -m handlers.invoke api {EVENTS / 'search.json'} > /tmp/search.json; "
        f"{python} -S -m handlers.invoke api {EVENTS / 'health.json'} > /tmp/health.json; "
        f'{python} -S -c \'import json,sys,importlib.util as u; print(json.dumps({{"sys_path_ok": sys.path[1] == "{task}", '
        f'"absent": [d for d in ("peft", "accelerate") if u.find_spec(d) is None]}}))\' > /tmp/path.json; '
        "touch /var/should-not-write 2>/dev/null && echo WROTE-OUTSIDE-TMP || true; "
        'echo ===; for f in uid ingest.json search.json health.json path.json; do echo "--- $f"; cat /tmp/$f; done; '
        "echo '--- tmp'; cd /tmp && find . -maxdepth 1 | sort"
    )
    before = _snapshot(task)
    proc = subprocess.run([*sandbox, "bash", "-c", script], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "WROTE-OUTSIDE-TMP" not in proc.stdout
    out = proc.stdout.split("===", 1)[1]
    sections = dict(s.split("\n", 1) for s in out.split("--- ")[1:])
    assert sections["uid"].strip() == "993"
    ingest = _result(sections["ingest.json"])
    assert ingest.get("batchItemFailures", []) == [] and ingest["results"][0]["document_id"], ingest
    search = _result(sections["search.json"])
    assert search["statusCode"] == 200 and json.loads(search["body"])["hits"], search
    health = _result(sections["health.json"])
    assert health["statusCode"] == 200, health
    # the task root is the import path, and the handlers above ran without the bake-only packages
    assert json.loads(sections["path.json"]) == {"sys_path_ok": True, "absent": ["peft", "accelerate"]}
    assert _snapshot(task) == before, "the run changed the read-only task tree"
    assert list((task / "engine").rglob("__pycache__/*.pyc"))  # bytecode precompiled, as in the image
