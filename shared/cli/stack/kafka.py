"""A local Apache Kafka broker (KRaft: one node, broker and controller) run from the jars `make
kafka` fetches, for the benches' `--broker kafka` and the test suite's real-Kafka fixture.

`start` writes server.properties, formats the storage, starts `java -cp <libs>/* kafka.Kafka` on
free ports and returns once the broker serves metadata with itself in it. `restart` runs the same
broker again on the same ports and log dir (Kafka keeps its log across it); `stop` ends it and
removes its data. The JVM (and the format tool) die with the process that started them, even a
SIGKILLed one (driftloop.shared.cli.children).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES
from driftloop.shared.cli.children import die_with_parent
from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.errors import Unavailable

LIBS_ENV = "DRIFTLOOP_KAFKA_LIBS"
"""A folder of Apache Kafka's jars to run instead of the ones `make kafka` fetched."""
MESSAGE_MAX_BYTES = MAX_MESSAGE_BYTES + 1024 * 1024
"""why: the broker limits a whole record batch, which carries headers and framing besides the
value, so a 16 MiB message needs a little more than 16 MiB."""
START_TIMEOUT_S = 90.0
STOP_GRACE_S = 20.0
LOG4J = """\
# Logging of a local Kafka broker (driftloop's shared/cli/stack/kafka.py): warnings and errors
# only, to the file named by -Ddriftloop.kafka.log.
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:driftloop.kafka.log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""
"""Used when the caller names no log4j configuration of its own (the tests keep theirs)."""


def default_libs() -> Path:
    """$DRIFTLOOP_KAFKA_LIBS, else the .bench/kafka/libs `make kafka` fills: in the checkout this
    module runs from, or else in the current directory."""
    if os.environ.get(LIBS_ENV):
        return Path(os.environ[LIBS_ENV])
    checkout = Path(__file__).resolve().parents[3] / ".bench" / "kafka" / "libs"
    return checkout if checkout.is_dir() else Path.cwd() / ".bench" / "kafka" / "libs"


def kafka_jar(libs: Path) -> Path | None:
    found = sorted(libs.glob("kafka_2.13-*.jar")) if libs.is_dir() else []
    return next((jar for jar in found if "-test" not in jar.name), None)


def missing(libs: Path | None = None) -> str | None:
    """Why a local Kafka broker cannot run here (one line naming what is missing), or None."""
    libs = libs or default_libs()
    if shutil.which("java") is None:
        return "`java` not found on PATH (Apache Kafka 4 needs Java 17 or later)"
    if kafka_jar(libs) is None:
        return (
            f"Apache Kafka's jars are not in {libs}: run `make kafka` (fetches Kafka with "
            f"Maven), or set {LIBS_ENV} to a folder of Kafka's jars"
        )
    return None


def version(libs: Path) -> str:
    """The Kafka version of the jars in `libs` (from kafka_2.13-<version>.jar)."""
    jar = kafka_jar(libs)
    return jar.stem.removeprefix("kafka_2.13-") if jar else "unknown"


def server_properties(
    port: int,
    controller_port: int,
    data_dir: Path,
    *,
    listeners: Mapping[str, tuple[str, int]] = {},
    extra: Mapping[str, str] = {},
) -> str:
    """A single node that is both broker and controller, configured like docker-compose.yml's;
    `listeners` adds client listeners (name -> (security protocol, port)), `extra` settings."""
    names = {"PLAINTEXT": ("PLAINTEXT", port), **listeners}
    bound = ",".join(f"{name}://127.0.0.1:{p}" for name, (_, p) in names.items())
    protocols = ",".join(f"{name}:{protocol}" for name, (protocol, _) in names.items())
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"{bound},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": bound,
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": f"{protocols},CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        # driftloop creates its topics (with their partition counts) itself: ensure_topics
        "auto.create.topics.enable": "false",
        "message.max.bytes": str(MESSAGE_MAX_BYTES),
        "replica.fetch.max.bytes": str(MESSAGE_MAX_BYTES),
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        # why: the first consumer group creates __consumer_offsets; 50 partitions (the default)
        # on one node cost start-up time and nothing here needs them
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        **extra,
    }
    return "".join(f"{key}={_escaped(value)}\n" for key, value in settings.items())


def _escaped(value: str) -> str:
    """A value as java.util.Properties reads it back (PEM blocks span lines)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def cluster_id() -> str:
    """A random KRaft cluster id (base64url of 16 bytes). why not any: one in 64 starts with
    "-", which the storage tool reads as an option."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


@dataclass
class LocalKafka:
    """One broker: its files in `workdir` (server.properties, logs, data/), its process."""

    workdir: Path
    libs: Path
    log4j: Path
    port: int
    """The PLAINTEXT listener's port (the bootstrap address)."""
    controller_port: int
    listeners: dict[str, str] = field(default_factory=dict)
    """host:port of each extra listener, by name."""
    heap: str = "1g"
    fast_start: bool = False
    """C1 only: the JVM starts faster (for tests) but moves bytes slower (not for benches)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def java_argv(self, log_name: str, main: str, *args: str) -> list[str]:
        jit = ["-XX:TieredStopAtLevel=1"] if self.fast_start else []
        return [
            "java",
            f"-Xmx{self.heap}",
            *jit,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j}",
            f"-Ddriftloop.kafka.log={self.workdir / log_name}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def format(self, extra_args: Sequence[str] = ()) -> None:
        """`kafka-storage.sh format`: the data dir gets meta.properties and the first metadata
        (`extra_args`: e.g. --add-scram, SCRAM credentials in it)."""
        argv = self.java_argv(
            "format.log", "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c"
        )
        done = subprocess.run(
            [*argv, str(self.config), *extra_args],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
            preexec_fn=die_with_parent(),
        )
        if done.returncode != 0:
            raise Unavailable(f"formatting Kafka's storage failed: {done.stdout}{done.stderr}")

    def launch(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the broker on its formatted storage; return once it serves metadata with
        itself in it (registered and unfenced: topics can be created)."""
        argv = self.java_argv("server.log", "kafka.Kafka", str(self.config))
        with open(self.workdir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        try:
            asyncio.run(self._wait_registered(timeout))
        except BaseException:
            self.end()
            raise

    async def _wait_registered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise Unavailable(f"Kafka exited with {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise Unavailable(f"Kafka not ready after {timeout:.0f}s: {self.tail()}")
            if _listening(self.port) and await _lists_a_broker(self.port):
                return
            await asyncio.sleep(0.05)  # poll: the broker is starting

    def end(self, *, kill: bool = False, grace: float = STOP_GRACE_S) -> None:
        """End the process: SIGKILL when `kill`, else SIGTERM (a controlled shutdown) and
        SIGKILL after `grace` seconds. The files stay."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        if not kill:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                pass
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def restart(self, *, kill: bool = False, timeout: float = START_TIMEOUT_S) -> None:
        """The same broker again: same ports, same log dir, so every topic, message and
        committed offset is still there (kill: SIGKILL first, an unclean shutdown)."""
        self.end(kill=kill)
        self.launch(timeout)

    def stop(self) -> None:
        """End the broker and remove its data dir (its logs stay in `workdir`)."""
        self.end()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def tail(self, chars: int = 3000) -> str:
        logs = [self.workdir / "stdout.log", self.log]
        return "\n".join(p.read_text(errors="replace")[-chars:] for p in logs if p.is_file())

    def delete_topics(self, timeout: float = 60.0) -> None:
        """Delete every topic but Kafka's own and wait until the broker lists none of them (so
        the next run creates driftloop's topics afresh, as on a new cluster)."""
        asyncio.run(_delete_topics(self.bootstrap, timeout))


def start(
    workdir: Path,
    *,
    libs: Path | None = None,
    log4j: Path | None = None,
    listeners: Mapping[str, str] = {},
    extra: Mapping[str, str] = {},
    format_args: Sequence[str] = (),
    heap: str = "1g",
    fast_start: bool = False,
) -> LocalKafka:
    """Format and start a broker in `workdir` on free ports; returns once it serves. Besides its
    PLAINTEXT listener it opens `listeners` (name -> security protocol); `extra` adds server
    settings, `format_args` arguments of the storage format. Raises Unavailable naming what is
    missing when Java or the jars are absent."""
    libs = libs or default_libs()
    reason = missing(libs)
    if reason is not None:
        raise Unavailable(f"cannot start a local Kafka broker: {reason}")
    workdir.mkdir(parents=True, exist_ok=True)
    if log4j is None:
        log4j = workdir / "log4j2.properties"
        log4j.write_text(LOG4J)
    taken: set[int] = set()

    def port() -> int:
        found = free_port()
        while found in taken:
            found = free_port()
        taken.add(found)
        return found

    plain, controller = port(), port()
    opened = {name: (protocol, port()) for name, protocol in listeners.items()}
    broker = LocalKafka(
        workdir,
        libs,
        log4j,
        plain,
        controller,
        {name: f"127.0.0.1:{p}" for name, (_, p) in opened.items()},
        heap=heap,
        fast_start=fast_start,
    )
    broker.config.write_text(
        server_properties(plain, controller, broker.data_dir, listeners=opened, extra=extra)
    )
    broker.format(format_args)
    broker.launch()
    return broker


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


async def _lists_a_broker(port: int) -> bool:
    """Whether a Metadata request answers with a broker in it (before the node is registered
    and unfenced, the list is empty)."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.metadata import MetadataRequest

    try:
        conn = await create_conn("127.0.0.1", port, request_timeout_ms=2000)
    except (OSError, KafkaError, TimeoutError):
        return False
    try:
        response = await conn.send(MetadataRequest([]))
    except (OSError, KafkaError, TimeoutError):
        return False
    finally:
        conn.close()
    return bool(response.brokers)


async def _delete_topics(bootstrap: str, timeout: float) -> None:
    from driftloop.shared.bus import connection

    admin = connection.admin(bootstrap)
    await connection.start(admin, bootstrap)
    try:
        names = [n for n in await admin.list_topics() if not n.startswith("__")]
        if names:
            await admin.delete_topics(names, timeout_ms=int(timeout * 1000))
        deadline = time.monotonic() + timeout
        while set(names) & set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise Unavailable(f"topics {names} still listed {timeout:.0f}s after deletion")
            await asyncio.sleep(0.2)  # poll: deletion completes asynchronously
    finally:
        await admin.close()
