"""End-to-end throughput and API latency with live services on this machine.

    .venv/bin/python -m bench.loadtest [--images 18] [--workers 1,2] [--clients 32]
                                       [--requests 20] [--json out.json]

What it does, every process started here and stopped at the end:
1. a fresh PostgreSQL database `perf` (dropped and created) and Redis database 10 (flushed),
   migrated, with one technician and one doctor;
2. gunicorn (`--gunicorn-workers`, default 2 processes) on 127.0.0.1:8765, DEBUG off;
3. for each Celery worker count W: a worker with `-Q celery,detect,segment --concurrency W`
   (prefork: W processes, each loading the detector once), then `--images` real ultrasound
   and radiograph DICOMs (the test set's source files, cycled) POSTed one by one by the
   technician; images/s = images / (first upload sent -> last scan completed), and per-image
   latency upload -> completed (p50, p95);
4. `--clients` concurrent clients (asyncio + httpx) as the doctor, each making `--requests`
   requests to each of: the patient's image list, the patient list, an image's detail;
   p50 and p95 latency per endpoint, requests/s and every non-200 counted as an error.
Only 127.0.0.1 is contacted, loops are bounded by counts and a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
BIN = ROOT / ".venv" / "bin"
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DB_NAME = "perf"
REDIS_URL = "redis://127.0.0.1:6379/10"
PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
RUN_DIR = ROOT / "var" / "perf"
TECH, DOCTOR = "perf_tech", "perf_doctor"


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
        "REDIS_URL": REDIS_URL,
        "MEDIMG_VAR_DIR": str(RUN_DIR),
        "MEDIA_ROOT": str(RUN_DIR / "media"),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(ROOT / "var" / "ultralytics"),
        "DJANGO_SETTINGS_MODULE": "medimg.settings",
    }


def fresh_database() -> None:
    import psycopg
    import redis

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env(), check=True
    )


def create_users(password: str) -> None:
    code = (
        "from accounts.models import Department, User, Role\n"
        "dept, _ = Department.objects.get_or_create(slug='load', defaults={'name': 'Load test'})\n"
        f"User.objects.create_user(username='{TECH}', password='{password}', "
        "role=Role.TECHNICIAN).departments.add(dept)\n"
        f"User.objects.create_user(username='{DOCTOR}', password='{password}', "
        "role=Role.DOCTOR).departments.add(dept)\n"
    )
    subprocess.run([PY, "manage.py", "shell", "-c", code], cwd=ROOT, env=env(), check=True)


def start(
    args: list[str], log_name: str, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log = (RUN_DIR / log_name).open("ab")
    return subprocess.Popen(
        args, cwd=ROOT, env={**env(), **(extra or {})}, stdout=log, stderr=subprocess.STDOUT
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def start_worker(
    log_name: str, queues: str, concurrency: int, threads: int = 0
) -> subprocess.Popen[bytes]:
    """A Celery worker; `threads` > 0 caps each process's ONNX Runtime and torch threads."""
    (RUN_DIR / log_name).unlink(missing_ok=True)
    name = log_name.removesuffix(".log")
    return start(
        [
            str(BIN / "celery"),
            "-A",
            "medimg",
            "worker",
            "-Q",
            queues,
            "--concurrency",
            str(concurrency),
            "--prefetch-multiplier",
            "1",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{name}@localhost",
        ],
        log_name,
        {"OMP_NUM_THREADS": str(threads)} if threads else None,
    )


def start_web(port: int, workers: int) -> subprocess.Popen[bytes]:
    return start(
        [
            str(BIN / "gunicorn"),
            "medimg.wsgi",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--timeout",
            "300",
            "--access-logfile",
            "-",
        ],
        f"gunicorn-{port}.log",
    )


def wait_http(base: str = BASE, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/api/schema/", timeout=5)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("gunicorn did not answer")


def wait_worker_ready(log_name: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    path = RUN_DIR / log_name
    while time.monotonic() < deadline:
        if path.exists() and " ready." in path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"celery worker not ready, see {path}")


def token(username: str, password: str) -> str:
    response = httpx.post(
        f"{BASE}/api/auth/token/", json={"username": username, "password": password}, timeout=60
    )
    response.raise_for_status()
    return str(response.json()["access"])


def upload_files() -> list[tuple[str, bytes]]:
    import pydicom

    from model.detector.backgrounds import package_file
    from model.detector.testset import load_ground_truth

    seen, files = set(), []
    for truth in load_ground_truth():
        path = package_file(truth.package, truth.file)
        # Single images: a multi-frame file is many images' work in one upload.
        frames = int(getattr(pydicom.dcmread(path, stop_before_pixels=True), "NumberOfFrames", 1))
        if truth.file not in seen and frames == 1:
            seen.add(truth.file)
            files.append((path.name, path.read_bytes()))
    return files


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 1) if values else float("nan")


def throughput(
    tech: str,
    patient_id: str,
    files: list[tuple[str, bytes]],
    count: int,
    bases: tuple[str, ...] = (BASE,),
) -> dict:
    """Upload `count` files (alternating between the web instances `bases`), wait for all."""
    headers = {"Authorization": f"Bearer {tech}"}
    sent: dict[int, float] = {}
    done: dict[int, float] = {}
    statuses: dict[int, str] = {}
    with httpx.Client(base_url=BASE, headers=headers, timeout=120) as client:
        start = time.perf_counter()
        for i in range(count):
            name, data = files[i % len(files)]
            response = client.post(
                f"{bases[i % len(bases)]}/api/patients/{patient_id}/images/",
                files={"files": (f"{i}-{name}", data)},
            )
            response.raise_for_status()
            scan_id = response.json()[0]["id"]
            sent[scan_id] = time.perf_counter()
        deadline = time.monotonic() + 900
        while len(done) < len(sent) and time.monotonic() < deadline:
            for scan_id in [s for s in sent if s not in done]:
                body = client.get(f"/api/images/{scan_id}/status/").json()
                if body["status"] in ("completed", "failed"):
                    done[scan_id] = time.perf_counter()
                    statuses[scan_id] = body["status"]
            time.sleep(0.2)
    elapsed = max(done.values()) - start if done else float("nan")
    latencies = [(done[s] - sent[s]) * 1000 for s in done]
    return {
        "images": count,
        "completed": sum(1 for s in statuses.values() if s == "completed"),
        "failed": sum(1 for s in statuses.values() if s == "failed"),
        "unfinished": len(sent) - len(done),
        "seconds": round(elapsed, 2),
        "images_per_second": round(len(done) / elapsed, 3) if done else 0.0,
        "latency_ms_p50": pct(latencies, 50),
        "latency_ms_p95": pct(latencies, 95),
    }


async def _client(
    client: httpx.AsyncClient, urls: dict[str, str], requests: int, out: dict[str, list]
) -> None:
    for _ in range(requests):
        for name, url in urls.items():
            start = time.perf_counter()
            try:
                response = await client.get(url)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            out[name].append(((time.perf_counter() - start) * 1000, ok))


async def _latency(doctor: str, urls: dict[str, str], clients: int, requests: int) -> dict:
    out: dict[str, list] = {name: [] for name in urls}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=BASE, headers={"Authorization": f"Bearer {doctor}"}, timeout=120, limits=limits
    ) as client:
        start = time.perf_counter()
        await asyncio.gather(*(_client(client, urls, requests, out) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    report: dict[str, Any] = {"clients": clients, "seconds": round(elapsed, 2)}
    total = 0
    for name, samples in out.items():
        times = [ms for ms, _ in samples]
        total += len(samples)
        report[name] = {
            "requests": len(samples),
            "errors": sum(1 for _, ok in samples if not ok),
            "p50_ms": pct(times, 50),
            "p95_ms": pct(times, 95),
        }
    report["requests_per_second"] = round(total / elapsed, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=18, help="uploads per worker count")
    parser.add_argument("--workers", default="1,2", help="Celery worker counts to measure")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=0, help="OMP_NUM_THREADS per worker process (0: unset)"
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20, help="per client and endpoint")
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="two gunicorn instances, separate detect / segment / default workers",
    )
    parser.add_argument("--json", dest="json_path", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    RUN_DIR.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_start": load(), "throughput": {}}
    password = secrets.token_urlsafe(24)
    fresh_database()
    create_users(password)
    if args.scale_out:
        scale_out(args, password, report)
        return
    processes = [start_web(PORT, args.gunicorn_workers)]
    try:
        wait_http()
        tech, doctor = token(TECH, password), token(DOCTOR, password)
        created = httpx.post(
            f"{BASE}/api/patients/",
            json={"id": "PERF-0001", "name": "Load Test"},
            headers={"Authorization": f"Bearer {tech}"},
            timeout=60,
        )
        created.raise_for_status()
        files = upload_files()
        for count in [int(w) for w in args.workers.split(",") if w.strip()]:
            log_name = f"celery-{count}.log"
            worker = start_worker(log_name, "celery,detect,segment", count, args.threads)
            processes.append(worker)
            wait_worker_ready(log_name)
            result = throughput(tech, "PERF-0001", files, args.images)
            result["load_after"] = load()
            report["throughput"][str(count)] = result
            print(f"{count} worker(s): {json.dumps(result)}", flush=True)
            stop(worker)
            processes.remove(worker)
        scans = httpx.get(
            f"{BASE}/api/patients/PERF-0001/images/",
            headers={"Authorization": f"Bearer {doctor}"},
            timeout=60,
        ).json()["results"]
        last_scan = scans[0]["id"]
        urls = {
            "patient image list": "/api/patients/PERF-0001/images/",
            "patient list": "/api/patients/",
            "image detail": f"/api/images/{last_scan}/",
        }
        report["load_before_latency"] = load()
        report["latency"] = asyncio.run(_latency(doctor, urls, args.clients, args.requests))
        report["load_end"] = load()
        print(f"latency: {json.dumps(report['latency'])}", flush=True)
    finally:
        for process in processes:
            stop(process)
    print_report(report, args)
    if args.json_path:
        args.json_path.write_text(json.dumps(report, indent=2) + "\n")


def scale_out(args: argparse.Namespace, password: str, report: dict[str, Any]) -> None:
    """docs/deployment.md's layout on this machine: does every part do its share?"""
    bases = (BASE, f"http://127.0.0.1:{PORT + 1}")
    for port in (PORT, PORT + 1):
        (RUN_DIR / f"gunicorn-{port}.log").unlink(missing_ok=True)
    processes = [start_web(PORT, 1), start_web(PORT + 1, 1)]
    queues = {"detect": "detect", "segment": "segment", "default": "celery"}
    try:
        for base in bases:
            wait_http(base)
        for name, queue in queues.items():
            processes.append(start_worker(f"scaleout-{name}.log", queue, 1))
        for name in queues:
            wait_worker_ready(f"scaleout-{name}.log")
        # One beat for the installation; every 10 s here, so the run sees it work.
        (RUN_DIR / "scaleout-beat.log").unlink(missing_ok=True)
        processes.append(
            start(
                [
                    str(BIN / "celery"),
                    "-A",
                    "medimg",
                    "beat",
                    "--schedule",
                    str(RUN_DIR / "beat-schedule"),
                    "--loglevel",
                    "INFO",
                ],
                "scaleout-beat.log",
                {"IMAGING_REQUEUE_EVERY_SECONDS": "10"},
            )
        )
        tech, doctor = token(TECH, password), token(DOCTOR, password)
        httpx.post(
            f"{bases[1]}/api/patients/",
            json={"id": "PERF-0001", "name": "Load Test"},
            headers={"Authorization": f"Bearer {tech}"},
            timeout=60,
        ).raise_for_status()
        result = throughput(tech, "PERF-0001", upload_files(), args.images, bases)
        report["scale_out"] = {"throughput": result, "segmentation": None}
        auth = {"Authorization": f"Bearer {doctor}"}
        with httpx.Client(base_url=bases[1], headers=auth, timeout=120) as client:
            models = client.get("/api/segmentation/models/").json()
            scans = client.get("/api/patients/PERF-0001/images/").json()["results"]
            if models and scans:
                job = client.post(
                    f"/api/images/{scans[-1]['id']}/segmentations/",
                    json={"model": models[0]["name"], "pixel_spacing_mm": [0.5, 0.5]},
                )
                job.raise_for_status()
                job_id = job.json()["id"]
                deadline = time.monotonic() + 300
                body = job.json()
                while body["status"] not in ("completed", "failed"):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                    body = client.get(f"/api/segmentations/{job_id}/").json()
                report["scale_out"]["segmentation"] = {
                    "model": models[0]["name"],
                    "status": body["status"],
                }
        handled = {}
        for name in queues:
            text = (RUN_DIR / f"scaleout-{name}.log").read_text(errors="replace")
            lines = [line for line in text.splitlines() if " succeeded in " in line]
            handled[name] = {
                task: sum(1 for line in lines if f"imaging.tasks.{task}[" in line)
                for task in ("process_scan", "run_segmentation", "requeue_stuck_scans")
            }
        report["scale_out"]["tasks_by_worker"] = handled
        report["scale_out"]["uploads_by_web_instance"] = {
            str(port): (RUN_DIR / f"gunicorn-{port}.log")
            .read_text(errors="replace")
            .count('"POST /api/patients/PERF-0001/images/')
            for port in (PORT, PORT + 1)
        }
        report["scale_out"]["load_end"] = load()
    finally:
        for process in processes:
            stop(process)
    print(json.dumps(report, indent=2))
    if args.json_path:
        args.json_path.write_text(json.dumps(report, indent=2) + "\n")


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(f"machine: {report['cpus']} CPUs; load average at start {report['load_start']}")
    print(
        f"gunicorn {args.gunicorn_workers} sync workers, PostgreSQL, Redis db 10; "
        f"OMP_NUM_THREADS per worker process: {args.threads or 'unset'}"
    )
    print(f"{'celery workers':<16}{'images/s':>10}{'p50 ms':>10}{'p95 ms':>10}  done/failed  load")
    for count, r in report["throughput"].items():
        print(
            f"{count:<16}{r['images_per_second']:>10}{r['latency_ms_p50']:>10}"
            f"{r['latency_ms_p95']:>10}  {r['completed']}/{r['failed']:<9}  {r['load_after']}"
        )
    latency = report.get("latency")
    if latency:
        print(
            f"{latency['clients']} concurrent clients, load before {report['load_before_latency']}"
            f", after {report['load_end']}; {latency['requests_per_second']} requests/s"
        )
        print(f"{'endpoint':<22}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}")
        for name, r in latency.items():
            if isinstance(r, dict):
                print(
                    f"{name:<22}{r['requests']:>9}{r['errors']:>8}{r['p50_ms']:>9}{r['p95_ms']:>9}"
                )


if __name__ == "__main__":
    main()
