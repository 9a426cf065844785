"""The chaos client: drives one model through a running stack and keeps the books.

Every row it ingests carries a unique `row_id`; every 50th row breaks the declared schema (x0
out of range) and must be rejected. The books are read back from the dataset's manifest (not
from broker watermarks): curated row ids (duplicates counted), rejected rows, and rows in =
curated + rejected. The label depends on `segment` only, so every fit is perfect; the policy's
negative margin (a non-inferiority test: promote unless worse by more than a point) promotes
every such retrain: "the loop closes" = a new version answers in serving.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import struct_pb2

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.protos.registry.v1 import registry_pb2 as rpb
from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
from driftloop.protos.validation.v1 import validation_pb2, validation_pb2_grpc
from driftloop.shared.grpc.client import auth_metadata, sync_channel
from driftloop.shared.manifest import latest_manifest, read_snapshot
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.settings import CommonSettings

FEATURES = ["x0", "x1", "segment"]
SEGMENTS = ["a", "b", "c"]
BAD_EVERY = 50
"""Every BAD_EVERY-th row has x0 out of the declared range: validation must reject it."""
REQUEST_ROWS = 250
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
}


@dataclass
class Books:
    """What the manifest says at one moment."""

    manifest_version: int = 0
    curated: int = 0
    rejected: int = 0
    ids: frozenset[str] = frozenset()
    duplicates: int = 0


class Harness:
    def __init__(self, common: CommonSettings, store: ObjectStore, model: str, seed: int = 7):
        self.common = common
        self.store = store
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.meta = auth_metadata(common)
        self.sent_good: set[str] = set()
        self.sent_bad = 0
        self._seq = 0
        self._batch = 0
        self._channels: dict[str, grpc.Channel] = {}

    # ---- plumbing

    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            self._channels[service] = sync_channel(self.common, service)
        return self._channels[service]

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()

    def retry(self, call: Callable[[], Any], timeout: float = 120, what: str = "call") -> Any:
        """Call until it stops failing with a retryable status (a service restarting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)  # poll: the service is restarting

    @property
    def registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.channel("registry"))

    @property
    def training(self) -> training_pb2_grpc.TrainingServiceStub:
        return training_pb2_grpc.TrainingServiceStub(self.channel("training"))

    # ---- setup

    def setup(self, rows: int, timeout: float = 180) -> str:
        """Declare the schema and the model, ingest `rows`, wait for v1 to answer."""
        validation = validation_pb2_grpc.ValidationServiceStub(self.channel("validation"))
        cols = [
            validation_pb2.ColumnSchema(name="row_id", type="string", required=True),
            validation_pb2.ColumnSchema(name="x0", type="float", required=True, min=-100, max=100),
            validation_pb2.ColumnSchema(name="x1", type="float", required=True),
            validation_pb2.ColumnSchema(
                name="segment", type="string", required=True, categories=SEGMENTS
            ),
            validation_pb2.ColumnSchema(name="label", type="string", required=True),
        ]
        self.retry(
            lambda: validation.PutSchema(
                validation_pb2.DatasetSchema(dataset=self.model, columns=cols),
                metadata=self.meta,
                timeout=10,
            )
        )
        spec = rpb.TrainingSpec(
            features=FEATURES,
            min_rows=200,
            policy=rpb.PromotionPolicy(margin=-0.01, floor=0.5),
        )
        self.retry(
            lambda: self.registry.CreateModel(
                rpb.CreateModelRequest(
                    name=self.model, dataset=self.model, target="label", spec=spec
                ),
                metadata=self.meta,
                timeout=10,
            )
        )
        self.ingest(rows)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.served_version():
                return self.served_version()
            time.sleep(0.3)  # poll: the first version trains, promotes and deploys
        raise TimeoutError(f"no version of {self.model} served within {timeout:.0f}s")

    # ---- data

    def rows(self, n: int) -> list[dict[str, Any]]:
        out = []
        segments = self.rng.choice(SEGMENTS, n)
        x = self.rng.normal(0.0, 1.0, (n, 2))
        for i in range(n):
            self._seq += 1
            seg = str(segments[i])
            bad = self._seq % BAD_EVERY == 0
            out.append(
                {
                    "row_id": f"r{self._seq:08d}",
                    "x0": 1e6 if bad else float(x[i, 0]),
                    "x1": float(x[i, 1]),
                    "segment": seg,
                    "label": "1" if seg == "a" else "0",
                }
            )
        return out

    def ingest(self, n: int, *, on_request: Callable[[int], None] | None = None) -> int:
        """Ingest `n` rows in requests of REQUEST_ROWS, each with a client batch id and retried
        until it is acknowledged (a retry of an acknowledged batch is curated once)."""
        stub = ingestion_pb2_grpc.IngestionServiceStub(self.channel("ingestion"))
        done = 0
        while done < n:
            part = self.rows(min(REQUEST_ROWS, n - done))
            self._batch += 1
            structs = []
            for row in part:
                s = struct_pb2.Struct()
                s.update(row)
                structs.append(s)
            request = ingestion_pb2.IngestRequest(
                dataset=self.model, rows=structs, batch_id=f"chaos-{self._batch:06d}"
            )
            self.retry(functools.partial(stub.Ingest, request, metadata=self.meta, timeout=10))
            for row in part:
                if row["x0"] == 1e6:
                    self.sent_bad += 1
                else:
                    self.sent_good.add(row["row_id"])
            done += len(part)
            if on_request is not None:
                on_request(done)
        return done

    @property
    def sent(self) -> int:
        return len(self.sent_good) + self.sent_bad

    def books(self) -> Books:
        manifest = latest_manifest(self.store, self.model)
        if manifest is None:
            return Books()
        frame = read_snapshot(self.store, manifest)
        ids = frame["row_id"].astype(str) if "row_id" in frame.columns else []
        unique = frozenset(ids)
        return Books(
            manifest.version,
            manifest.total_rows,
            manifest.rows_rejected,
            unique,
            len(ids) - len(unique),
        )

    def wait_accounted(self, timeout: float) -> Books:
        """Wait until every row sent is curated or rejected; the books at that point (or at
        the deadline, with rows still missing)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                books = self.books()
            except Exception:  # noqa: BLE001 - the store may be cut off right now
                books = None
            if (
                books
                and books.curated + books.rejected >= self.sent
                and self.sent_good <= books.ids
            ):
                return books
            if time.monotonic() > deadline:
                return books or Books()
            time.sleep(0.5)  # poll: validation curates asynchronously

    # ---- models

    def production(self) -> str:
        try:
            reply = self.registry.GetProduction(
                rpb.GetProductionRequest(model=self.model), timeout=3
            )
        except grpc.RpcError:
            return ""
        return str(reply.version)

    def infer_request(self, n: int = 1) -> v2.ModelInferRequest:
        request = v2.ModelInferRequest(model_name=self.model)
        x = self.rng.normal(0.0, 1.0, (2, n))
        for name, values in (("x0", x[0]), ("x1", x[1])):
            tensor = request.inputs.add(name=name, shape=[n], datatype="FP64")
            tensor.contents.fp64_contents.extend(float(v) for v in values)
        tensor = request.inputs.add(name="segment", shape=[n], datatype="BYTES")
        tensor.contents.bytes_contents.extend(s.encode() for s in self.rng.choice(SEGMENTS, n))
        return request

    def served_version(self) -> str:
        stub = v2_grpc.GRPCInferenceServiceStub(self.channel("serving"))
        try:
            return str(stub.ModelInfer(self.infer_request(), timeout=5).model_version)
        except grpc.RpcError:
            return ""

    def predict(self, requests: int, rows: int = 10) -> int:
        """Send prediction traffic; returns how many requests were answered."""
        stub = v2_grpc.GRPCInferenceServiceStub(self.channel("serving"))
        ok = 0
        for _ in range(requests):
            try:
                stub.ModelInfer(self.infer_request(rows), timeout=5)
                ok += 1
            except grpc.RpcError:
                pass
        return ok

    def drift_report(self) -> monitoring_pb2.DriftReport | None:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(self.channel("monitoring"))
        try:
            return stub.GetDriftReport(
                monitoring_pb2.GetDriftReportRequest(model=self.model), timeout=5
            )
        except grpc.RpcError:
            return None

    def start_run(self, reason: str) -> str:
        run = self.retry(
            lambda: self.training.StartRun(
                training_pb2.StartRunRequest(model=self.model, reason=reason),
                metadata=self.meta,
                timeout=10,
            )
        )
        return str(run.run_id)

    def run(self, run_id: str) -> training_pb2.Run | None:
        try:
            return self.training.GetRun(training_pb2.GetRunRequest(run_id=run_id), timeout=3)
        except grpc.RpcError:
            return None

    def close_loop(self, run_id: str, before: str, timeout: float) -> tuple[bool, str]:
        """Wait for `run_id` to register a promoted version and for serving to answer with it;
        (closed, version)."""
        deadline = time.monotonic() + timeout
        version = ""
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run is not None and run.state == "failed":
                return False, f"run failed: {run.error}"
            if run is not None and run.state == "succeeded":
                version = run.registered_version
                if not run.promoted:
                    return False, f"v{version} not promoted: {run.decision_reason}"
                if version != before and self.served_version() == version:
                    return True, version
            time.sleep(0.3)  # poll: training, promotion and deployment run on their own
        return False, version

    def versions_by_run(self) -> dict[str, int]:
        """How many versions each training run registered (more than one is a bug)."""
        reply = self.retry(
            lambda: self.registry.ListVersions(rpb.ListVersionsRequest(model=self.model), timeout=5)
        )
        counts: dict[str, int] = {}
        for v in reply.versions:
            counts[v.run_id] = counts.get(v.run_id, 0) + 1
        return counts
