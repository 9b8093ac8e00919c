"""`make image-test`: the built image run as Lambda runs it, then through `sam build` + `sam local invoke`.

    python infra/image_test.py [--reps 3] [--skip-sam] [--out bench/results/image.json]

Part 1, the container as Lambda runs it (`docker run`, no SAM): read-only root filesystem, a tmpfs /tmp as
the only writable path, uid 993, `--memory` = the template's MemorySize, the entrypoint under the real
Runtime Interface Emulator (the one the SAM CLI wheel bundles), moto's server on 127.0.0.1 for S3, SQS,
DynamoDB and Secrets Manager, the scripted OpenAI-compatible LLM server for extraction. It ingests a PDF, a
DOCX and a scanned PDF, answers /health, /search and /extract (sync: result.json + Parquet in S3, the job
record in DynamoDB, the LLM key read from Secrets Manager), and checks `docker diff`: nothing changed in
the container's filesystem (only /tmp, a tmpfs, and the index folder mounted under it, took writes).
Cold (first invoke of a fresh container: import + model load + the work) and warm invokes of both
functions are timed, the functions alternated, `--reps` times; peak memory from `docker stats`.

Part 2, the README's steps: `sam build` from template.yaml as written (the build args from
--parameter-overrides: equal to `make image`'s, so every step is a cache hit and needs no network), then
`sam local invoke IngestFunction -e events/s3-put.json` and `ApiFunction -e events/{health,search,extract}.json`
(infra/sam_local.py: the SAM CLI with host networking, as this Docker engine has no bridge network), and
the same effects are checked.

Writes bench/results/image.json: image size (total, per layer), final-stage package sizes, versions,
cold/warm seconds per function (median, min, max of the reps), peak memory, and what each part checked.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures import documents as d  # noqa: E402
from tests.fixtures.llm_server import ScriptedLLM  # noqa: E402
from tests.fixtures.moto import moto_server  # noqa: E402

BUCKET = "docvision-documents"  # the sample events' bucket
REGION = "us-east-1"
SAM_VERSION = "1.170.0"
UID, GID = "993", "990"  # Lambda's sandbox user


def log(msg: str) -> None:
    print(f"image-test: {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_env() -> dict[str, str]:
    path = REPO / ".build" / "image.env"
    if not path.exists():
        raise SystemExit("image-test: .build/image.env is missing: run `make image` first")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def uv() -> str:
    return shutil.which("uv") or str(REPO / ".stamps" / "bin" / "uv")


def sam_python() -> list[str]:
    """The SAM CLI's Python (uv's tool environment for aws-sam-cli, as `make lint` uses)."""
    return [uv(), "tool", "run", "--quiet", "--from", f"aws-sam-cli=={SAM_VERSION}", "python"]


def rie_path() -> str:
    out = sh(*sam_python(), "-c", "import samcli, os; print(os.path.dirname(samcli.__file__))").stdout.strip()
    rie = Path(out) / "local" / "rapid" / "aws-lambda-rie-x86_64"
    if not rie.exists():
        raise SystemExit(f"image-test: the SAM CLI's emulator is not at {rie}")
    return str(rie)


def template_memory_mb() -> int:
    import yaml  # cfn-lint's dependency, in the dev env

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    t = yaml.load((REPO / "template.yaml").read_text(), Loader=Loader)
    return int(t["Parameters"]["FunctionMemoryMB"]["Default"])


# ------------------------------------------------------------------------------------------- fixtures
class World:
    """moto (S3, SQS, DynamoDB, Secrets Manager) with the bucket, queues, tables and the LLM key secret."""

    def __init__(self, moto_url: str, llm_url: str) -> None:
        import boto3

        self.url = moto_url
        kw = {"endpoint_url": moto_url, "region_name": REGION, "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing"}  # fmt: skip
        self.s3 = boto3.client("s3", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.ddb = boto3.client("dynamodb", **kw)
        self.sm = boto3.client("secretsmanager", **kw)
        self.s3.create_bucket(Bucket=BUCKET)
        self.queue = self.sqs.create_queue(QueueName="ingest")["QueueUrl"]
        self.dlq = self.sqs.create_queue(QueueName="ingest-dlq")["QueueUrl"]
        for name, key in (("idem", "id"), ("jobs", "job_id")):
            self.ddb.create_table(TableName=name, KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")  # fmt: skip
        self.ddb.create_table(TableName="membership", BillingMode="PAY_PER_REQUEST",  # the template's MembershipTable
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}])  # fmt: skip
        self.llm_secret = self.sm.create_secret(Name="docvision-llm-key", SecretString="sk-image-test")["ARN"]
        self.llm_url = llm_url

    def env(self, index_in_container: str = "/tmp/qdrant") -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(template_memory_mb()),
            "POWERTOOLS_SERVICE_NAME": "docvision", "POWERTOOLS_METRICS_NAMESPACE": "DocVisionImageTest",
            "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_LOG_LEVEL": "INFO",
            "DOCVISION_STORE": f"s3://{BUCKET}/derived", "DOCUMENTS_BUCKET": BUCKET,
            "DOCVISION_INDEX_PATH": index_in_container, "DOCVISION_WORK_DIR": "/tmp",
            "QDRANT_SECRET_ARN": "", "IDEMPOTENCY_TABLE": "idem", "JOBS_TABLE": "jobs", "MEMBERSHIP_TABLE": "membership",
            "INGEST_QUEUE_URL": self.queue, "INGEST_DLQ_URL": self.dlq,
            "DOCVISION_LLM_PROVIDER": "openai-generic", "DOCVISION_LLM_MODEL": "test-vlm",
            "DOCVISION_LLM_BASE_URL": self.llm_url, "DOCVISION_LLM_API_KEY_REF": f"secret:{self.llm_secret}",
        }  # fmt: skip

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for p in pages for o in p.get("Contents", [])]


def event(name: str) -> dict[str, Any]:
    return json.loads((REPO / "events" / name).read_text())


def put_event(key: str) -> dict[str, Any]:
    ev = event("s3-put.json")
    ev["Records"][0]["s3"]["object"]["key"] = urllib.parse.quote_plus(key)
    return ev


def extract_event(key: str, fmt: str) -> dict[str, Any]:
    ev = event("extract.json")
    body = json.loads(ev["body"])
    body["document"]["key"] = key
    body["format"] = fmt
    ev["body"] = json.dumps(body)
    return ev


def unique_pdf(tmp: Path, tag: str) -> bytes:
    """The sample multipage PDF with a distinct trailing comment (distinct bytes, same pages)."""
    return d.multipage_pdf(tmp / "m.pdf").read_bytes() + f"\n%{tag}\n".encode()


def manifest_answer() -> str:
    from tests.integration.test_extraction import manifest

    return json.dumps(manifest())


# ------------------------------------------------------------------------------------------- containers
class Function:
    """One function's container, started as Lambda would start it, invoked through the emulator."""

    def __init__(self, image: str, handler: str, env: dict[str, str], rie: str, memory_mb: int,
                 index_dir: Path) -> None:  # fmt: skip
        self.port, api_port = free_port(), free_port()
        self.name = f"docvision-it-{uuid.uuid4().hex[:8]}"
        args = ["docker", "run", "-d", "--name", self.name, "--network", "host", "--read-only",
                "--tmpfs", "/tmp:rw,exec,mode=1777", "--user", f"{UID}:{GID}",
                "--memory", f"{memory_mb}m", "--memory-swap", f"{memory_mb}m",
                "-v", f"{rie}:/var/rapid/aws-lambda-rie:ro", "-v", f"{index_dir}:/tmp/qdrant",
                "--entrypoint", "/var/rapid/aws-lambda-rie"]  # fmt: skip
        for k, v in {**env, "AWS_LAMBDA_FUNCTION_NAME": f"docvision-{handler.split('.')[1]}"}.items():
            args += ["-e", f"{k}={v}"]
        args += [image, "--log-level", "error", "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
                 "--runtime-api-address", f"127.0.0.1:{api_port}", "/opt/venv/bin/python", "-m", "awslambdaric",
                 handler]  # fmt: skip
        self.started = time.perf_counter()
        sh(*args)
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name}: the emulator did not listen: {self.logs()[-2000:]}"
                    ) from None
                time.sleep(0.05)

    def _sample(self) -> None:
        units = {
            "B": 1,
            "KiB": 1024,
            "MiB": 1024**2,
            "GiB": 1024**3,
            "kB": 1000,
            "MB": 1000**2,
            "GB": 1000**3,
        }
        while not self._stop.is_set():
            out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", self.name],
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
            m = re.match(r"\s*([0-9.]+)\s*([A-Za-z]+)", out.split("/")[0]) if out else None
            if m:
                self.peak_bytes = max(self.peak_bytes, int(float(m.group(1)) * units.get(m.group(2), 1)))
            self._stop.wait(0.3)

    def invoke(self, ev: dict[str, Any], timeout: float = 900) -> tuple[float, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/2015-03-31/functions/function/invocations",
            data=json.dumps(ev).encode(), method="POST",
        )  # fmt: skip
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=timeout) as r:
            out = json.loads(r.read() or b"null")
        return time.perf_counter() - t, out

    def logs(self) -> str:
        p = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return p.stdout + p.stderr

    # the emulator's bind-mount target: Docker creates it (and so "changes" /var) before the function starts
    MOUNT_POINTS = frozenset({"C /var", "A /var/rapid", "A /var/rapid/aws-lambda-rie"})

    def diff(self) -> list[str]:
        lines = sh("docker", "diff", self.name).stdout.splitlines()
        return [line for line in lines if line.strip() and line.strip() not in self.MOUNT_POINTS]

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join(5)
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)


def api_body(out: dict[str, Any]) -> tuple[int, Any]:
    return out["statusCode"], json.loads(out["body"])


def check(cond: bool, what: str, detail: Any = "") -> None:
    if not cond:
        raise AssertionError(f"{what}: {str(detail)[:3000]}")
    log(f"ok: {what}")


# ------------------------------------------------------------------------------------------- part 1
def run_lambda_like(image: str, world: World, llm: ScriptedLLM, reps: int, tmp: Path) -> dict[str, Any]:
    rie, mem = rie_path(), template_memory_mb()
    index = tmp / "index"
    index.mkdir()
    os.chmod(index, 0o777)
    env = world.env()
    timings: dict[str, list[float]] = {k: [] for k in
        ("ingest_cold_s", "ingest_warm_s", "api_cold_health_s", "api_first_search_s", "api_warm_search_s")}  # fmt: skip
    peaks: dict[str, int] = {"ingest": 0, "api": 0}
    checks: dict[str, Any] = {}
    diffs: list[str] = []

    # documents: the PDF (cold) and a second distinct PDF (warm) per rep; the DOCX and the scan once
    world.put("raw/report.docx", d.docx(tmp / "r.docx").read_bytes())
    world.put("raw/scan.pdf", d.scanned_pdf(tmp / "s.pdf").read_bytes())
    for rep in range(reps):
        # ingest: a fresh container = a cold start, then a warm invoke with a different document
        world.put(f"raw/rep{rep}-cold.pdf", unique_pdf(tmp, f"rep{rep}-cold"))
        world.put(f"raw/rep{rep}-warm.pdf", unique_pdf(tmp, f"rep{rep}-warm"))
        fn = Function(image, "handlers.ingest.handler", env, rie, mem, index)
        try:
            cold, out = fn.invoke(put_event(f"raw/rep{rep}-cold.pdf"))
            check(out.get("batchItemFailures", []) == [] and out["results"][0].get("document_id"),
                  f"rep {rep}: cold ingest of a PDF", out)  # fmt: skip
            warm, out = fn.invoke(put_event(f"raw/rep{rep}-warm.pdf"))
            check(out["results"][0].get("document_id"), f"rep {rep}: warm ingest of a PDF", out)
            if rep == 0:
                for key, kind in (("raw/report.docx", "docx"), ("raw/scan.pdf", "scan")):
                    secs, out = fn.invoke(put_event(key))
                    res = out["results"][0]
                    check(res.get("document_id") and not res.get("error"), f"ingest of the {kind}", out)
                    checks[f"ingest_{kind}"] = {"seconds": round(secs, 3), "pages": res.get("pages")}
            timings["ingest_cold_s"].append(cold)
            timings["ingest_warm_s"].append(warm)
            diffs += fn.diff()
        except Exception:
            log(fn.logs()[-4000:])
            raise
        finally:
            fn.stop()
        peaks["ingest"] = max(peaks["ingest"], fn.peak_bytes)

        # the API: cold /health, then /search (first: loads the query model), then warm /search
        fn = Function(image, "handlers.api.handler", env, rie, mem, index)
        try:
            health_s, out = fn.invoke(event("health.json"))
            status, body = api_body(out)
            check(status == 200, f"rep {rep}: /health", out)
            first_s, out = fn.invoke(event("search.json"))
            status, body = api_body(out)
            check(status == 200 and body["hits"], f"rep {rep}: /search finds the ingested pages", out)
            warm_s, out = fn.invoke(event("search.json"))
            timings["api_cold_health_s"].append(health_s)
            timings["api_first_search_s"].append(first_s)
            timings["api_warm_search_s"].append(warm_s)
            if rep == 0:
                checks["health"] = {k: body.get(k) for k in ("status",)} if isinstance(body, dict) else {}
                checks["search_hit_documents"] = len({h["document_id"] for h in api_body(out)[1]["hits"]})
                checks["extract"] = check_extract(fn, world, llm, "raw/rep0-cold.pdf")
            diffs += fn.diff()
        except Exception:
            log(fn.logs()[-4000:])
            raise
        finally:
            fn.stop()
        peaks["api"] = max(peaks["api"], fn.peak_bytes)

    check(diffs == [], "docker diff: nothing written outside /tmp (read-only root, tmpfs /tmp)", diffs)
    pages = world.keys("derived/pages/") or world.keys("derived/")
    check(len(pages) > 0, "page images in S3 under derived/", pages[:5])
    points = count_points(index)
    checks.update({"s3_derived_objects": len(world.keys("derived/")), "index_files": points,
                   "nothing_written_outside_tmp": True, "uid": UID, "memory_mb": mem})  # fmt: skip
    return {"timings": timings, "peak_memory_bytes": peaks, "checks": checks}


def count_points(index: Path) -> int:
    files = [p for p in index.rglob("*") if p.is_file()]
    check(
        len(files) > 0, "the embedded index holds the ingested points (files under the mounted index)", files
    )
    return len(files)


def check_extract(fn: Function, world: World, llm: ScriptedLLM, key: str) -> dict[str, Any]:
    before = len(llm.requests)
    secs, out = fn.invoke(extract_event(key, "parquet"))
    status, body = api_body(out)
    check(status == 200 and body["status"] == "done", "/extract (sync) done", out)
    result = body["outputs"]["result"].split(f"{BUCKET}/", 1)[1]
    canonical = json.loads(world.s3.get_object(Bucket=BUCKET, Key=result)["Body"].read())
    check(canonical["data"]["consignee"]["name"] == "Northwind Traders", "result.json in S3", canonical)
    tables = body["outputs"]["tables"]
    parquet_key = tables["line_items"]["parquet"].split(f"{BUCKET}/", 1)[1]
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(world.s3.get_object(Bucket=BUCKET, Key=parquet_key)["Body"].read()))
    check(table.num_rows >= 1, "line_items Parquet in S3", table.schema)
    job = world.ddb.get_item(TableName="jobs", Key={"job_id": {"S": body["job_id"]}}).get("Item", {})
    check(job.get("status", {}).get("S") == "done", "the job record in DynamoDB", job)
    auth = llm.headers[before]["authorization"] if len(llm.headers) > before else None
    check(auth == "Bearer sk-image-test", "the LLM key came from Secrets Manager", auth)
    return {"seconds": round(secs, 3), "parquet_rows": table.num_rows, "job_status": "done"}


# ------------------------------------------------------------------------------------------- part 2
def run_sam(world: World, llm: ScriptedLLM, tmp: Path, build: dict[str, str]) -> dict[str, Any]:
    overrides = [
        f"LambdaBase={build['LAMBDA_BASE']}", f"TorchIndexUrl={build['TORCH_INDEX_URL']}",
        f"AllowCudaTorch={build['ALLOW_CUDA_TORCH']}", f"ModelSource={build['MODEL_SOURCE']}",
        f"ModelRevision={build['MODEL_REVISION']}" if build.get("MODEL_REVISION") else "",
        "QdrantSecretArn=arn:aws:secretsmanager:us-east-1:000000000000:secret:qdrant-local",
        "LlmProvider=openai-generic", "LlmModel=test-vlm",
    ]  # fmt: skip
    overrides = [o for o in overrides if o]
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": REGION,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "DOCKER_BUILDKIT": "0"}  # fmt: skip
    sam = [*sam_python(), str(REPO / "infra" / "sam_local.py")]
    t = time.perf_counter()
    proc = subprocess.run([*sam, "build", "--template", "template.yaml", "--parameter-overrides", *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)  # fmt: skip
    build_s = time.perf_counter() - t
    check(proc.returncode == 0, "sam build from template.yaml", proc.stdout[-3000:] + proc.stderr[-3000:])
    built = (REPO / ".aws-sam" / "build" / "template.yaml").read_text()
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    resources = yaml.load(built, Loader=Loader)["Resources"]
    uris = {n: resources[n]["Properties"].get("ImageUri") for n in ("IngestFunction", "ApiFunction")}
    # SAM builds functions with the same Dockerfile, context and build args once and points all at that image
    check(all(uris.values()), "sam build gave both functions an image", uris)
    cached = proc.stdout.count("Using cache") + proc.stderr.count("Using cache")

    index = tmp / "sam-index"
    index.mkdir()
    os.chmod(index, 0o777)
    names = {"IngestFunction", "ApiFunction"}
    (tmp / "env.json").write_text(json.dumps({n: {k: v for k, v in world.env().items()} for n in names}))
    # what the template does not declare (so --env-vars cannot set it): moto's endpoint and test credentials
    undeclared = {k: v for k, v in world.env().items()
                  if (k.startswith("AWS_") and not k.startswith("AWS_LAMBDA_")) or k == "POWERTOOLS_TRACE_DISABLED"}  # fmt: skip
    (tmp / "extra.json").write_text(json.dumps(undeclared))

    def invoke(function: str, ev: dict[str, Any], name: str) -> tuple[float, Any]:
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(ev))
        t = time.perf_counter()
        p = subprocess.run(
            [*sam, "local", "invoke", function, "-e", str(path), "--docker-network", "host",
             "--env-vars", str(tmp / "env.json"), "--skip-pull-image", "--parameter-overrides", *overrides,
             "--lambda-like", "--extra-env", str(tmp / "extra.json"), "--bind", f"{index}:/tmp/qdrant"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        secs = time.perf_counter() - t
        check(
            p.returncode == 0, f"sam local invoke {function} -e {name}", p.stdout[-2000:] + p.stderr[-4000:]
        )
        lines = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("{")]
        return secs, json.loads(lines[-1])

    world.put("raw/shipping manifest.pdf", unique_pdf(tmp, "sam"))  # events/s3-put.json's key
    steps = proc.stdout.count("Step ") + proc.stderr.count("Step ")
    out: dict[str, Any] = {"sam_build_s": round(build_s, 1), "sam_build_steps": steps,
                           "sam_build_cache_hits": cached, "image_uris": uris}  # fmt: skip
    secs, res = invoke("IngestFunction", event("s3-put.json"), "s3-put")
    check(res["results"][0].get("document_id"), "sam: ingest of events/s3-put.json", res)
    doc = res["results"][0]["document_id"]
    out["ingest_s"] = round(secs, 2)
    secs, res = invoke("ApiFunction", event("health.json"), "health")
    check(api_body(res)[0] == 200, "sam: /health", res)
    out["health_s"] = round(secs, 2)
    secs, res = invoke("ApiFunction", event("search.json"), "search")
    status, body = api_body(res)
    check(status == 200 and any(h["document_id"] == doc for h in body["hits"]), "sam: /search finds it", res)
    out["search_s"] = round(secs, 2)
    secs, res = invoke("ApiFunction", event("extract.json"), "extract")
    status, body = api_body(res)
    check(status == 200 and body["status"] == "done", "sam: /extract (events/extract.json, csv)", res)
    result = body["outputs"]["result"].split(f"{BUCKET}/", 1)[1]
    check(bool(world.s3.get_object(Bucket=BUCKET, Key=result)["Body"].read()), "sam: result.json in S3")
    job = world.ddb.get_item(TableName="jobs", Key={"job_id": {"S": body["job_id"]}}).get("Item", {})
    check(job.get("status", {}).get("S") == "done", "sam: the job record", job)
    out["extract_s"] = round(secs, 2)
    count_points(index)
    return out


# ------------------------------------------------------------------------------------------- part 3
def run_backfill(gpu_image: str, world: World, tmp: Path) -> dict[str, Any]:
    """Dockerfile.gpu's image (built from the CUDA-less stand-in base) runs `backfill --shard 0` on the CPU."""
    keys = [f"raw/backfill/doc{i}.pdf" for i in range(4)]
    for i, key in enumerate(keys):
        world.put(key, unique_pdf(tmp, f"backfill-{i}"))
    env = {k: v for k, v in world.env().items()
           if k.startswith(("AWS_", "DOCVISION_STORE", "MEMBERSHIP_TABLE")) and not k.startswith("AWS_LAMBDA_")}  # fmt: skip
    args = ["docker", "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,exec,mode=1777",
            "--shm-size", "1g", "-e", "DOCVISION_COMPUTE=auto", "-e", "DOCVISION_INDEX_PATH=/tmp/qdrant"]  # fmt: skip
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    t = time.perf_counter()
    proc = sh(*args, gpu_image, "python", "-m", "engine", "backfill", f"s3://{BUCKET}/raw/backfill/",
              "--shards", "2", "--shard", "0", check=False)  # fmt: skip
    secs = time.perf_counter() - t
    check(
        proc.returncode == 0,
        "backfill --shard 0 in the GPU image (on the CPU)",
        proc.stdout[-2000:] + proc.stderr[-3000:],
    )
    records = [k for k in world.keys("derived/backfill/") if "shard-0" in k]
    check(bool(records), "the shard's record in S3", world.keys("derived/backfill/")[:10])
    user = sh("docker", "run", "--rm", "--network", "none", gpu_image, "id", "-u").stdout.strip()
    return {"seconds": round(secs, 2), "shard_records": len(records), "user": user,
            "stderr_tail": proc.stderr.strip().splitlines()[-3:]}  # fmt: skip


# ------------------------------------------------------------------------------------------- image facts
def image_facts(image: str) -> dict[str, Any]:
    inspect = json.loads(sh("docker", "image", "inspect", image).stdout)[0]
    history = json.loads("[" + ",".join(sh("docker", "history", "--no-trunc", "--format", "{{json .}}",
                                            image).stdout.split("\n")[:-1]) + "]")  # fmt: skip
    layers = [{"size_bytes": int(h["Size"]) if str(h["Size"]).isdigit() else h["Size"],
               "created_by": h["CreatedBy"][:160]} for h in history]  # fmt: skip
    script = r"""
import json, os, subprocess, sys, platform
def du(p):
    out = subprocess.run(["du", "-sb", p], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None
sp = "/opt/venv/lib/python%d.%d/site-packages" % sys.version_info[:2]
cuda = [os.path.join(sp, n) for n in os.listdir(sp) if n.lower().startswith(("nvidia", "triton", "cuda"))]
import torch, transformers, torchvision
print(json.dumps({
  "packages_bytes": {"torch": du(sp + "/torch"), "torchvision": du(sp + "/torchvision"),
    "cuda_libraries (nvidia*, triton, cuda*)": sum(du(p) or 0 for p in cuda),
    "site_packages_total": du(sp), "libreoffice": du("/usr/lib/libreoffice"),
    "tesseract_data": du("/usr/share/tesseract-ocr"), "fonts": du("/usr/share/fonts"),
    "model": du("/opt/docvision/model"), "task_root": du("/var/task")},
  "versions": {"debian": open("/etc/debian_version").read().strip(), "python": platform.python_version(),
    "torch": torch.__version__, "torchvision": torchvision.__version__, "transformers": transformers.__version__,
    "libreoffice": subprocess.run(["soffice", "--version"], capture_output=True, text=True).stdout.strip(),
    "tesseract": subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout.split("\n")[0]},
}))
"""
    run = sh("docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp:rw,exec,mode=1777",
             "--user", f"{UID}:{GID}", "--entrypoint", "/opt/venv/bin/python", image, "-c", script)  # fmt: skip
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    base = json.loads(sh("docker", "image", "inspect", image_env()["LAMBDA_BASE"]).stdout)[0]
    return {
        "image": image, "id": inspect["Id"], "size_bytes": inspect["Size"], "layers": layers,
        "base": {"image": image_env()["LAMBDA_BASE"], "size_bytes": base["Size"],
                 "labels": (base.get("Config") or {}).get("Labels")},
        **facts,
    }  # fmt: skip


def summarize(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "spread": round(max(values) - min(values), 3),
            "runs": [round(v, 3) for v in values]}  # fmt: skip


def save(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-sam", action="store_true")
    ap.add_argument("--only-sam", action="store_true", help="add the SAM part to an existing --out report")
    ap.add_argument("--gpu-image", help="also run `backfill --shard 0` in this Dockerfile.gpu image")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "image.json")
    args = ap.parse_args()
    build = image_env()
    image = build["IMAGE"]
    started = time.perf_counter()
    report: dict[str, Any] = {"build": {k: v for k, v in build.items() if k != "IMAGE"}}
    report.update(image_facts(image))
    with tempfile.TemporaryDirectory(prefix="docvision-image-test-") as t, moto_server() as moto_url, \
            ScriptedLLM([{"content": manifest_answer()}]) as llm:  # fmt: skip
        tmp = Path(t)
        world = World(moto_url, llm.base_url)
        if args.only_sam:
            report = json.loads(args.out.read_text())
            report["sam"] = run_sam(world, llm, tmp, build)
            save(args.out, report)
            return 0
        part1 = run_lambda_like(image, world, llm, args.reps, tmp)
        report["lambda_like"] = {
            "how": "docker run --read-only --tmpfs /tmp --user 993:990 --memory=MemorySize --network host, "
                   "entrypoint the SAM CLI's aws-lambda-rie; functions alternated (ingest, api) per rep",
            "cpus": os.cpu_count(),
            "timings_s": {k: summarize(v) for k, v in part1["timings"].items()},
            "peak_memory_mib": {k: round(v / 2**20) for k, v in part1["peak_memory_bytes"].items()},
            "checks": part1["checks"],
        }  # fmt: skip
        save(args.out, report)  # each part's results are kept even if a later part fails
        if args.gpu_image:
            report["gpu_image_backfill"] = run_backfill(args.gpu_image, world, tmp)
            save(args.out, report)
        if not args.skip_sam:
            report["sam"] = run_sam(world, llm, tmp, build)
    report["image_test_s"] = round(time.perf_counter() - started, 1)
    save(args.out, report)
    log(f"wrote {args.out.relative_to(REPO)} ({report['image_test_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
