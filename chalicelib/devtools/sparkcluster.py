"""A standalone Spark cluster on 127.0.0.1 from the pyspark package: a master and two
workers on free ports, for tests and `bench engines --cluster`.

    with StandaloneCluster(workers=2) as master_url:   # spark://127.0.0.1:<port>
        session = spark.job_session(master_url)

Each process is `spark-class org.apache.spark.deploy.{master.Master,worker.Worker}`
(pyspark ships the jars but not sbin/start-master.sh); all are stopped on exit.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .loopback import free_port, wait_port


def _spark_class() -> Path:
    import pyspark  # deferred: a developer tool; the package is not in the image

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


class StandaloneCluster:
    def __init__(self, workers: int = 2, cores: int = 1, memory: str = "1g",
                 log_dir: str | None = None, timeout: float = 60.0):
        self.workers, self.cores, self.memory, self.timeout = workers, cores, memory, timeout
        self.log_dir = Path(log_dir or "/tmp/sparkcluster")
        self.procs: list[subprocess.Popen] = []
        self.url = ""

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (kept open by Popen)
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
        proc = subprocess.Popen([str(_spark_class()), *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def start(self) -> str:
        port = free_port()
        master = self._start("master", "org.apache.spark.deploy.master.Master",
                             "--host", "127.0.0.1", "--port", str(port),
                             "--webui-port", str(free_port()))
        wait_port(port, self.timeout, master, poll=0.2)
        self.url = f"spark://127.0.0.1:{port}"
        for k in range(self.workers):
            wport = free_port()
            w = self._start(f"worker{k}", "org.apache.spark.deploy.worker.Worker", self.url,
                            "--host", "127.0.0.1", "--port", str(wport),
                            "--webui-port", str(free_port()), "--cores", str(self.cores),
                            "--memory", self.memory)
            wait_port(wport, self.timeout, w, poll=0.2)
        return self.url

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
