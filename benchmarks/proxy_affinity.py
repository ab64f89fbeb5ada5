"""Two API processes behind nginx: how many asks are served from prepared picks.

Starts a fresh PostgreSQL database, two ``beamsteer serve`` processes on it (with Redis for
the event relay) and nginx in front with the README's configuration ("Scale API replicas
behind a proxy"): a consistent hash of the experiment id, or another balancing for
comparison (``--balance random``). Then runs several experiments in a loop (ask, measure for
a while, tell, all through the proxy) and reports, per process, the suggestions it handed
out and how many of them came from picks prepared while the beamline measured.

Needs nginx (``apt-get install nginx-light``), PostgreSQL and Redis on 127.0.0.1; nothing
here asserts anything::

    python benchmarks/proxy_affinity.py                      # hash of the experiment id
    python benchmarks/proxy_affinity.py --balance random     # nginx's random balancing
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server.live import ServeProcess, free_port  # noqa: E402

NGINX_CONF = """
events {{}}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
http {{
access_log off;
client_body_temp_path {tmp}/body;
proxy_temp_path {tmp}/proxy;
map $uri $beamsteer_experiment {{
    ~^/api/v1/experiments/(?<id>[^/]+)  $id;
    default                             $request_id;
}}
upstream beamsteer {{
    {balance}
    server 127.0.0.1:{a}; server 127.0.0.1:{b};
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://beamsteer;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Host $host;
    }}
}}
}}
"""

BALANCE = {"hash": "hash $beamsteer_experiment consistent;", "random": "random;",
           "round-robin": ""}


def _metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


def _f(x: float, y: float) -> float:
    return 0.3 * x - 0.1 * y + 1.0


def run(a: argparse.Namespace) -> None:
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is missing: apt-get install nginx-light")
    name = "proxy_" + uuid.uuid4().hex[:10]
    with psycopg.connect(a.postgres, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    db = a.postgres.rsplit("/", 1)[0] + f"/{name}"
    proxy = free_port()
    with tempfile.TemporaryDirectory(prefix="beamsteer-proxy-") as tmp, ExitStack() as stack:
        stack.callback(_drop_database, a.postgres, name)  # last: after the servers stopped
        env = {"BEAMSTEER_REDIS_URL": a.redis, "BEAMSTEER_REDIS_PREFIX": name}
        servers = []
        for i in range(2):
            data = Path(tmp) / f"server-{i}"
            data.mkdir()
            servers.append(stack.enter_context(ServeProcess(
                data, torch_threads=None, database_url=db, env=env)))
        ports = [s.port for s in servers]
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, balance=BALANCE[a.balance],
                                          a=ports[0], b=ports[1], port=proxy))
        nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp, "-g", "daemon off;"])
        stack.callback(_stop, nginx)
        _loop(a, proxy, ports)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def _drop_database(postgres: str, name: str) -> None:
    with psycopg.connect(postgres, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _loop(a: argparse.Namespace, proxy: int, ports: list[int]) -> None:
    spec = {"name": "proxy", "goal": "map", "acquisition": "variance",
            "parameters": [{"name": "x", "lower": 0, "upper": 10},
                           {"name": "y", "lower": -5, "upper": 5}],
            "outputs": [{"name": "intensity"}]}
    with httpx.Client(base_url=f"http://127.0.0.1:{proxy}", timeout=60) as c:
        exps = []
        for i in range(a.experiments):
            r = c.post("/api/v1/experiments", json={**spec, "name": f"proxy-{i}"})
            r.raise_for_status()
            exps.append(r.json()["id"])
        start = [(x, y) for x in (0.5, 2.5, 4.5, 6.5, 8.5) for y in (-4, -1, 2, 4)]
        for e in exps:
            c.post(f"/api/v1/experiments/{e}/measurements", json={"measurements": [
                {"position": {"x": x, "y": y}, "values": {"intensity": _f(x, y)}}
                for x, y in start]}).raise_for_status()
        time.sleep(5)  # the first fits
        before = {p: (_metric(p, "beamsteer_suggestions_total"),
                      _metric(p, "beamsteer_suggestions_ahead_total")) for p in ports}
        t0 = time.perf_counter()
        for _ in range(a.rounds):
            batch = {}
            for e in exps:
                r = c.post(f"/api/v1/experiments/{e}/suggestions", json={"n": 1})
                r.raise_for_status()
                batch[e] = r.json()["suggestions"][0]
            time.sleep(a.measure_s)
            for e, s in batch.items():
                p = s["position"]
                c.post(f"/api/v1/experiments/{e}/measurements", json={"measurements": [
                    {"position": p, "values": {"intensity": _f(p["x"], p["y"])},
                     "suggestion_id": s["id"]}]}).raise_for_status()
        wall = time.perf_counter() - t0
    print(f"balance {a.balance}: {a.experiments} experiments x {a.rounds} rounds "
          f"(ask, {a.measure_s:g} s measuring, tell), {wall:.0f} s")
    print("| API process | suggestions | from prepared picks |")
    print("|---|---:|---:|")
    total = ahead = 0.0
    for p in ports:
        n = _metric(p, "beamsteer_suggestions_total") - before[p][0]
        k = _metric(p, "beamsteer_suggestions_ahead_total") - before[p][1]
        total, ahead = total + n, ahead + k
        print(f"| :{p} | {n:.0f} | {k:.0f} |")
    print(f"| all | {total:.0f} | {ahead:.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--balance", choices=sorted(BALANCE), default="hash",
                   help="nginx balancing: the README's hash of the experiment id, or another")
    p.add_argument("--experiments", type=int, default=6)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--measure-s", type=float, default=0.3,
                   help="seconds between an ask's reply and its tell")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                   help="a database to connect to for creating (and dropping) a fresh one")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
