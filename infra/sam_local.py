"""`sam local invoke` on a Docker engine without a bridge network (this sandbox's), unchanged otherwise.

    python infra/sam_local.py local invoke ApiFunction -e events/health.json --docker-network host \
        --env-vars .build/sam-env.json [--lambda-like] [--extra-env FILE.json] [--bind HOST_DIR:CONTAINER_DIR]

Plain `sam local invoke` (SAM CLI 1.170) puts the function container on Docker's default bridge network,
publishes the emulator's port 8080 on a random host port and posts the event there; `--docker-network
NAME` only connects the container to one more network, and `host` is skipped (a container cannot join the
host network after creation). On a Docker engine with its default bridge (any developer machine, CI with
Docker) that works as is and this wrapper is not needed. Here the daemon runs with `--bridge=none`, so the
container would have no reachable port. With `--docker-network host` this wrapper runs the same SAM CLI
in-process and changes only how the container is created:

- `network_mode=host`, no published ports; the emulator (SAM's own bundled aws-lambda-rie) is told to
  listen on the free loopback port SAM already picked, and its Runtime API on another free loopback port;
- `--lambda-like`: read-only root filesystem, a tmpfs /tmp (the only writable path), uid 993 (Lambda's
  sandbox user), as Lambda runs the image (SAM itself already sets --memory to the function's MemorySize);
- `--extra-env FILE`: variables the template does not declare (`--env-vars` only overrides declared ones),
  here AWS_ENDPOINT_URL and test credentials pointing boto3 at moto on 127.0.0.1;
- `--bind HOST:CONTAINER`: one bind mount (under /tmp), e.g. the embedded index that an ingest invoke
  writes and a later API invoke reads (on AWS both talk to the Qdrant server instead).

Everything else (template parsing, parameters, env vars, the emulator, the invoke, the output) is SAM's.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pop_option(argv: list[str], name: str, has_value: bool = True) -> str | None:
    if name not in argv:
        return None
    i = argv.index(name)
    value = argv[i + 1] if has_value else "1"
    del argv[i : i + (2 if has_value else 1)]
    return value


def main() -> None:
    argv = sys.argv[1:]
    lambda_like = _pop_option(argv, "--lambda-like", has_value=False) is not None
    extra_env_file = _pop_option(argv, "--extra-env")
    bind = _pop_option(argv, "--bind")
    host_network = "--docker-network" in argv and argv[argv.index("--docker-network") + 1] == "host"
    extra_env: dict[str, str] = {}
    if extra_env_file:
        with open(extra_env_file) as f:
            extra_env = json.load(f)

    if host_network:
        from docker.models.containers import ContainerCollection
        from samcli.local.docker.container import Container

        original_create = Container.create
        original_collection_create = ContainerCollection.create

        def create(self: Any, *args: Any, **kwargs: Any) -> Any:
            rie_port = self.rapid_port_host
            api_port = _free_port()

            def collection_create(coll: Any, image: Any, *a: Any, **kw: Any) -> Any:
                kw.pop("ports", None)
                kw["network_mode"] = "host"
                entry = list(kw.get("entrypoint") or [])
                if entry and entry[0].endswith("aws-lambda-rie"):
                    entry[1:1] = [
                        "--runtime-interface-emulator-address", f"127.0.0.1:{rie_port}",
                        "--runtime-api-address", f"127.0.0.1:{api_port}",
                    ]  # fmt: skip
                    kw["entrypoint"] = entry
                kw["environment"] = {**(kw.get("environment") or {}), **extra_env}
                if lambda_like:
                    kw["read_only"] = True
                    kw["tmpfs"] = {"/tmp": "rw,exec,mode=1777"}
                    kw["user"] = "993:990"
                if bind:
                    host_dir, container_dir = bind.split(":", 1)
                    kw.setdefault("volumes", {})[host_dir] = {"bind": container_dir, "mode": "rw"}
                return original_collection_create(coll, image, *a, **kw)

            ContainerCollection.create = collection_create  # type: ignore[method-assign]
            try:
                return original_create(self, *args, **kwargs)
            finally:
                ContainerCollection.create = original_collection_create  # type: ignore[method-assign]

        Container.create = create  # type: ignore[method-assign]

    from samcli.cli.main import cli

    sys.argv = ["sam", *argv]
    cli()


if __name__ == "__main__":
    main()
