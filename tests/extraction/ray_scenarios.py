"""Ray runs for tests/extraction/test_ray_engine.py, each in a network namespace that has only loopback.

Ray binds to the machine's outward address even when told 127.0.0.1, so every Ray process of the
tests starts inside ``unshare -n`` (see :func:`in_loopback`), with a fresh HOME. The commands print
one JSON line; the tests read the caches they wrote and assert.

    python -m tests.extraction.ray_scenarios local DATA OUT        # ray.init(num_cpus=2), fake backbone
    python -m tests.extraction.ray_scenarios store DATA OUT        # the same, DATA read from S3 on loopback
    python -m tests.extraction.ray_scenarios cluster DATA OUT -- EXTRACT_OPTIONS...
    python -m tests.extraction.ray_scenarios store-killed DATA OUT -- EXTRACT_OPTIONS...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def in_loopback(command: list[str], timeout: float, home: Path) -> subprocess.CompletedProcess:
    """Run ``command`` in a new network namespace with only loopback up, HOME=``home``; the tests' modules
    importable by every process it starts (Ray workers included)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray_tmp = tempfile.mkdtemp(prefix="fcray", dir="/tmp")  # Ray's own files, apart from any other Ray's; short
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": path, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    wrapped = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    try:
        return subprocess.run(wrapped, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def scenario_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.extraction.ray_scenarios", *args]


def local(data: Path, out: Path) -> dict:
    """A local Ray of 2 CPUs started here, the 16-d fake backbone, 2 actors."""
    import ray

    from featcache.api import extract
    from tests.support import FakeBackbone

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = extract(data, out, backbone=FakeBackbone(), engine="ray", ray_actors=2, image_size=71, batch_size=4)
    finally:
        ray.shutdown()
    return {"computed": result.computed, "rows": result.rows}


def store(data: Path, out: Path) -> dict:
    """moto's S3 server on this namespace's loopback holding DATA, a local Ray of 2 CPUs started here, the fake
    backbone, one actor (a second would take the CPU that Ray Data's own tasks wait for): extract from s3://."""
    import ray

    from featcache.api import extract
    from tests.extraction.s3_server import MotoServer, store_environment, upload
    from tests.support import FakeBackbone

    server = MotoServer().start()
    try:
        os.environ.update(store_environment(server.endpoint))  # the actors inherit it, as from an instance role
        url = upload(server.endpoint, data, "photos", "set/")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            result = extract(url, out, backbone=FakeBackbone(), engine="ray", ray_actors=1, image_size=71, batch_size=4)
        finally:
            ray.shutdown()
    finally:
        server.stop()
    return {"computed": result.computed, "rows": result.rows, "url": url}


class NodeBoundBackbone:
    """A fake backbone whose identity names the process it is in, as if each node had another weights file."""

    def __init__(self):
        from tests.support import FakeBackbone

        self.fake = FakeBackbone()

    def identity(self) -> dict:
        return {**self.fake.identity(), "weights_id": f"weights seen by pid {os.getpid()}"}

    def build(self):
        return self.fake.build()


def mismatch(data: Path, out: Path) -> dict:
    """A local Ray whose actors see other weights than the driver: the run must stop with featcache's error."""
    import ray

    from featcache.api import extract
    from featcache.errors import FeatcacheError

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        extract(data, out, backbone=NodeBoundBackbone(), engine="ray", ray_actors=2, image_size=71, batch_size=4)
    except FeatcacheError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    finally:
        ray.shutdown()
    return {"error": None}


class Cluster:
    """A head node and a worker node on this machine, 1 CPU each, each ``ray start --block`` in a session of its
    own, so stopping them kills their process groups and nothing else."""

    def __init__(self, folder: Path, port: int = 26379):
        self.folder, self.port, self.nodes = folder, port, []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats"]
        self._node(["--head", "--port", str(self.port), "--include-dashboard", "false", *common], "head")
        self._wait_for_nodes(1)
        self._node(["--address", self.address, *common], "worker")
        self._wait_for_nodes(2)

    def _node(self, args: list[str], name: str) -> None:
        log = open(self.folder / f"{name}.log", "w")
        ray = Path(sys.executable).with_name("ray")
        self.nodes.append(subprocess.Popen([str(ray), "start", *args], stdout=log, stderr=log, start_new_session=True))

    def _wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() >= n:
                return
            if any(node.poll() is not None for node in self.nodes):
                raise RuntimeError(f"a Ray node exited: {self.logs()}")
            time.sleep(1)
        raise RuntimeError(f"{n} Ray node(s) did not come up in {timeout} s: {self.logs()}")

    def alive_nodes(self) -> int:
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(len([n for n in ray.nodes() if n['Alive']]))"
        )
        done = subprocess.run([sys.executable, "-c", probe, self.address], capture_output=True, text=True, timeout=60)
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0

    def pids(self) -> set[int]:
        return {node.pid for node in self.nodes}

    def logs(self) -> str:
        return " | ".join((p.read_text()[-800:]) for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        spawned = descendants(self.pids())  # Ray may start workers in sessions of their own
        for node in self.nodes:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(node.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    node.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for node in self.nodes:  # what a node left running in its group when its ray start exited
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in spawned:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestors: set[int]) -> bool:
    for _ in range(64):
        if pid in ancestors:
            return True
        if pid <= 1:
            return False
        pid = _parent(pid)
    return False


def descendants(ancestors: set[int], marker: str = "") -> list[int]:
    """The processes started, directly or not, by ``ancestors``, whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ancestors:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in cmdline and _descends_from(int(entry.name), ancestors):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def actor_processes(nodes: set[int]) -> list[int]:
    """The pids of featcache's Ray actors started by this cluster's nodes (the ``ray start`` processes ``nodes``)."""
    return descendants(nodes, "ShardActor")


def shard_count(out: Path) -> int:
    folder = Path(str(out) + ".shards")
    return len(list(folder.glob("*.h5"))) if folder.is_dir() else 0


def committed_hashes(out: Path) -> int:
    """Distinct content hashes in the committed shards beside ``out``."""
    import h5py

    found = set()
    for shard in Path(str(out) + ".shards").glob("*.h5"):
        with h5py.File(shard, "r") as h5:
            found.update(h5["sha256"].asstr()[:].tolist())
    return len(found)


def run_extract(
    data: Path,
    out: Path,
    address: str,
    options: list[str],
    kill_actor_after: int = 0,
    kill_driver_after: int = 0,
    nodes: set[int] = frozenset(),
) -> dict:
    """`featcache extract --engine ray` as a process; SIGKILL one actor, or the driver, once that many shards
    exist beside ``out``."""
    command = [
        sys.executable,
        "-m",
        "featcache",
        "extract",
        str(data),
        "-o",
        str(out),
        "--engine",
        "ray",
        "--ray-address",
        address,
        "-q",
        *options,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = {"actor": None, "driver": False, "shards_at_kill": None}
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        shards = shard_count(out)
        if kill_actor_after and killed["actor"] is None and shards >= kill_actor_after:
            actors = actor_processes(nodes)
            if actors:
                os.kill(actors[0], signal.SIGKILL)
                killed |= {"actor": actors[0], "shards_at_kill": shards}
        if kill_driver_after and shards >= kill_driver_after:
            proc.kill()
            killed |= {"driver": True, "shards_at_kill": shards}
            break
        time.sleep(0.05)
    if proc.poll() is None and not killed["driver"]:
        proc.kill()
    stdout, stderr = proc.communicate()
    return {"returncode": proc.returncode, "stdout": stdout, "stderr": stderr[-3000:], **killed}


def cluster(data: Path, out: Path, options: list[str]) -> dict:
    """On a two-node cluster: extract to OUT with an actor killed mid-run; then to OUT.driver-killed.h5 with the
    driver killed mid-run, and the same command again."""
    folder = Path(tempfile.mkdtemp(prefix="fcray", dir="/tmp"))  # Ray's socket paths must stay short
    nodes = Cluster(folder)
    report: dict = {}
    try:
        nodes.start()
        report["actor_kill"] = run_extract(data, out, nodes.address, options, kill_actor_after=2, nodes=nodes.pids())
        second = out.with_name(out.stem + ".driver-killed.h5")
        report["driver_kill"] = run_extract(data, second, nodes.address, options, kill_driver_after=2)
        time.sleep(5)  # the killed driver's actors finish or die with its job
        report["shards_before_rerun"] = shard_count(second)
        report["committed_before_rerun"] = committed_hashes(second)
        report["rerun"] = run_extract(data, second, nodes.address, options)
    except Exception as exc:  # reported to the test, which fails with it
        report["error"] = f"{type(exc).__name__}: {exc} | {nodes.logs()}"
    finally:
        nodes.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return report


def store_killed(data: Path, out: Path, options: list[str]) -> dict:
    """moto's S3 server holding DATA and a two-node cluster, in this namespace: extract from s3:// to OUT with the
    driver killed mid-run, then the same command again."""
    from tests.extraction.s3_server import MotoServer, store_environment, upload

    server = MotoServer().start()
    folder = Path(tempfile.mkdtemp(prefix="fcray", dir="/tmp"))
    nodes = Cluster(folder)
    report: dict = {}
    try:
        os.environ.update(store_environment(server.endpoint))  # the nodes inherit it, as from an instance role
        url = upload(server.endpoint, data, "photos", "set/")
        nodes.start()
        report["driver_kill"] = run_extract(url, out, nodes.address, options, kill_driver_after=2)
        time.sleep(5)  # the killed driver's actors finish or die with its job
        report["committed_before_rerun"] = committed_hashes(out)
        report["rerun"] = run_extract(url, out, nodes.address, options)
    except Exception as exc:  # reported to the test, which fails with it
        report["error"] = f"{type(exc).__name__}: {exc} | {nodes.logs()}"
    finally:
        nodes.stop()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return report


def main(argv: list[str]) -> None:
    what, data, out, *rest = argv
    if what == "local":
        report = local(Path(data), Path(out))
    elif what == "store":
        report = store(Path(data), Path(out))
    elif what == "store-killed":
        report = store_killed(Path(data), Path(out), [a for a in rest if a != "--"])
    elif what == "mismatch":
        report = mismatch(Path(data), Path(out))
    else:
        report = cluster(Path(data), Path(out), [a for a in rest if a != "--"])
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
