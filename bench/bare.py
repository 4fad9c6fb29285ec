"""The bare work the daemon is compared with, in a child process of its own (its CPU is its own:
none of the benchmark's threads, collectors or samplers share it).

- reads: N bare reads of a source (its tuned SDK client, `workers` threads sharing one pool of
  `workers` connections), `rounds` times after a warm-up round; CPU seconds per read.
- mass (`--scale-kubeconfig`): the mass event done by hand: for each of N objects one read and
  one merge patch of its Deployment's `/scale` (the kubernetes package's ApiClient, raw, as the
  daemon sends it), `workers` at a time; the wall time of the whole round.

    python -m bench.bare --source azure-queue --names FILE [--workers 16] [--rounds 3]
        [--scale-kubeconfig KC --namespace NS --replicas 1]

The source's connection details come in BENCH_SOURCE_SPEC (JSON), not on the command line.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SPEC_ENV = "BENCH_SOURCE_SPEC"
REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 300


def run_bare(
    source: Any,
    names: Sequence[str],
    workdir: Path,
    workers: int,
    rounds: int = 3,
    scale: tuple[Path, str, int] | None = None,
) -> dict[str, Any]:
    """Parent side: run this module in a child on `names`; `scale` = (kubeconfig, namespace,
    replicas) for the mass work."""
    names_file = workdir / f"bare-names-{len(names)}.txt"
    names_file.write_text("\n".join(names))
    args = [
        sys.executable,
        "-m",
        "bench.bare",
        "--source",
        source.type,
        "--names",
        str(names_file),
        "--workers",
        str(workers),
        "--rounds",
        str(rounds),
    ]
    if scale is not None:
        kubeconfig, namespace, replicas = scale
        args += [
            "--scale-kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            "--replicas",
            str(replicas),
        ]
    env = {**os.environ, SPEC_ENV: json.dumps(source.bare_spec())}
    env.pop("KUBECONFIG", None)
    done = subprocess.run(
        args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS
    )
    if done.returncode != 0:
        raise RuntimeError(f"bare {source.type} run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _rounds(
    pool: ThreadPoolExecutor, task: Callable[[str], None], names: Sequence[str], rounds: int
) -> tuple[list[float], float]:
    """Wall seconds of each round and CPU seconds of them all."""
    timings = []
    cpu = time.process_time()
    for _ in range(rounds):
        start = time.perf_counter()
        list(pool.map(task, names))
        timings.append(time.perf_counter() - start)
    return timings, time.process_time() - cpu


def measure_reads(
    read: Callable[[str], None], names: Sequence[str], workers: int, rounds: int
) -> dict[str, Any]:
    single = []
    for name in names[: min(len(names), 20)]:
        start = time.perf_counter()
        read(name)
        single.append(time.perf_counter() - start)
    with ThreadPoolExecutor(workers, thread_name_prefix="bare") as pool:
        list(pool.map(read, names))  # warm: every client built, every connection open
        timings, cpu = _rounds(pool, read, names, rounds)
    return {
        "rounds_s": timings,
        "median_s": statistics.median(timings),
        "single_s": statistics.median(single),
        "cpu_s_per_call": cpu / (rounds * len(names)),
    }


def scale_patcher(kubeconfig: str, namespace: str, replicas: int, workers: int) -> Any:
    """(patch(name), warm()) of a bare raw client: one merge patch of a Deployment's /scale."""
    from kubernetes import config
    from kubernetes.client.api_client import ApiClient
    from kubernetes.client.configuration import Configuration

    configuration = Configuration()
    config.load_kube_config(
        config_file=kubeconfig, client_configuration=configuration, persist_config=False
    )
    configuration.connection_pool_maxsize = workers
    configuration.retries = False
    api = ApiClient(configuration)
    headers = {"Accept": "application/json", "Content-Type": "application/merge-patch+json"}

    def send(method: str, path: str, body: Any = None) -> None:
        method, url, all_headers, data, _ = api.param_serialize(
            method, path, header_params=dict(headers), body=body, auth_settings=["BearerToken"]
        )
        response = api.call_api(method, url, all_headers, data)
        response.read()
        if not 200 <= response.status <= 299:
            raise RuntimeError(f"{method} {path}: {response.status}")

    def patch(name: str) -> None:
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
        send("PATCH", path, {"spec": {"replicas": replicas}})

    return patch, lambda: send("GET", "/version")


def measure_mass(
    read: Callable[[str], None], names: Sequence[str], workers: int, options: argparse.Namespace
) -> dict[str, Any]:
    patch, warm = scale_patcher(
        options.scale_kubeconfig, options.namespace, options.replicas, workers
    )

    def read_and_patch(name: str) -> None:
        read(name)
        patch(name)

    with ThreadPoolExecutor(workers, thread_name_prefix="bare") as pool:
        list(pool.map(read, names))  # warm the source's clients and connections
        list(pool.map(lambda _: warm(), range(workers)))  # and the API server's
        timings, cpu = _rounds(pool, read_and_patch, names, 1)
    return {"wall_s": timings[0], "cpu_s": cpu, "calls": 2 * len(names)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--names", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale-kubeconfig")
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--replicas", type=int, default=1)
    options = parser.parse_args(argv)
    from bench.sources import BENCH_SOURCES

    names = [n for n in options.names.read_text().splitlines() if n]
    read, close = BENCH_SOURCES[options.source].bare_reader(
        json.loads(os.environ[SPEC_ENV]), options.workers
    )
    try:
        if options.scale_kubeconfig:
            result = measure_mass(read, names, options.workers, options)
        else:
            result = measure_reads(read, names, options.workers, options.rounds)
    finally:
        close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
