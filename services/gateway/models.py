"""The Models service: the registry, read openly, changed only with the admin token."""

from __future__ import annotations

import json
import logging

from digits.errors import FailedPrecondition
from digits.registry import ModelRecord, Registry
from digits.rpc import Context
from digits.settings import Settings
from digits.v1 import models_pb2 as pb
from digits.v1 import models_pb2_grpc as pb_grpc
from services.gateway.auth import require_scope
from services.gateway.blocking import off_loop

log = logging.getLogger(__name__)


class Models(pb_grpc.ModelsServicer):
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self._registry = registry
        self._settings = settings

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        limit = min(request.limit or 50, 1000)
        records = await off_loop(self._registry.list, limit)
        active = await off_loop(self._registry.active_version) or ""
        return pb.ListModelsResponse(models=[to_proto(r, active) for r in records], active_version=active)

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        record = await off_loop(self._registry.get, request.version)
        active = await off_loop(self._registry.active_version) or ""
        model = to_proto(record, active)
        model.report_json = json.dumps(record.report)
        return model

    async def ActivateModel(self, request: pb.ActivateModelRequest, context: Context) -> pb.Activation:
        require_scope(context, self._settings, "models")
        # Refuse a blob that would not load before pointing every replica at it.
        await off_loop(self._registry.verify, request.version)
        current = await off_loop(self._registry.active_version)
        why = request.reason or "manual activation"
        if current != request.version and not await off_loop(
            self._registry.activate, request.version, expected=current, why=why
        ):
            raise FailedPrecondition("another promotion changed the active model at the same moment; retry")
        log.info("model activated", extra={"from": current, "to": request.version, "why": why})
        return pb.Activation(previous_version=current or "", active_version=request.version)

    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.Activation:
        require_scope(context, self._settings, "models")
        previous, active = await off_loop(self._registry.rollback, why=request.reason or "manual rollback")
        log.info("model rolled back", extra={"from": previous, "to": active})
        return pb.Activation(previous_version=previous, active_version=active)


def to_proto(record: ModelRecord, active: str) -> pb.Model:
    return pb.Model(
        version=record.version,
        kind=record.kind,
        params_json=json.dumps(record.params),
        metrics_json=json.dumps(record.metrics),
        dataset=pb.Dataset(
            source=str(record.dataset.get("source", "")),
            size=int(record.dataset.get("size", 0)),
            digest=str(record.dataset.get("digest", "")),
        ),
        created_at=record.created_at,
        parent=record.parent,
        sha256=record.sha256,
        blob_size=record.blob_size,
        active=record.version == active,
        accuracy=float(record.metrics.get("accuracy", 0.0)),
        f1_weighted=float(record.metrics.get("f1_weighted", 0.0)),
        job_id=record.job_id,
        code_version=record.code_version,
    )
