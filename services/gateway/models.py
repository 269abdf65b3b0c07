"""The Models service: the registry, read openly, changed only with the admin token."""

from __future__ import annotations

import json
import logging

from digits.errors import FailedPrecondition
from digits.platform.registry import ModelRecord, Promotion, Registry, RegistryView
from digits.platform.rpc import Context
from digits.settings import Settings
from digits.v1 import models_pb2 as pb
from digits.v1 import models_pb2_grpc as pb_grpc
from services.gateway.auth import require_scope
from services.gateway.blocking import off_loop
from services.gateway.replicas import ReplicaStatus, ReplicaWatch

log = logging.getLogger(__name__)


class Models(pb_grpc.ModelsServicer):
    def __init__(self, registry: Registry, replicas: ReplicaWatch, settings: Settings) -> None:
        self._registry = registry
        self._replicas = replicas
        self._settings = settings

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        view = await off_loop(self._registry.view, min(request.limit or 50, 1000))
        return pb.ListModelsResponse(models=[to_proto(r, view) for r in view.records], active_version=view.active,
                                     replicas=[replica_proto(s) for s in self._replicas.snapshot()])

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        view = await off_loop(self._registry.view_of, request.version)
        model = to_proto(view.records[0], view)
        model.report_json = json.dumps(view.records[0].report)
        return model

    async def ActivateModel(self, request: pb.ActivateModelRequest, context: Context) -> pb.Activation:
        require_scope(context, self._settings, "models")
        await off_loop(self._registry.check_servable, request.version)
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

    async def PinModel(self, request: pb.PinModelRequest, context: Context) -> pb.Model:
        require_scope(context, self._settings, "models")
        await off_loop(self._registry.pin, request.version, request.pinned)
        log.info("model pinned" if request.pinned else "model unpinned", extra={"version": request.version})
        return await self.GetModel(pb.GetModelRequest(version=request.version), context)

    async def ListPromotions(self, request: pb.ListPromotionsRequest, context: Context) -> pb.ListPromotionsResponse:
        promotions = await off_loop(self._registry.promotions, min(request.limit or 50, 1000))
        return pb.ListPromotionsResponse(promotions=[promotion_proto(p) for p in promotions])


def to_proto(record: ModelRecord, view: RegistryView) -> pb.Model:
    """A record as the API shows it, active and pinned as ``view`` saw them."""
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
        active=record.version == view.active,
        accuracy=float(record.metrics.get("accuracy", 0.0)),
        f1_weighted=float(record.metrics.get("f1_weighted", 0.0)),
        job_id=record.job_id,
        code_version=record.code_version,
        pinned=record.version in view.pinned,
        pruned_at=record.pruned_at,
        key_id=record.key_id,
        fitted_on=record.fitted_on,
    )


def replica_proto(status: ReplicaStatus) -> pb.Replica:
    return pb.Replica(id=status.id, version=status.version, sha256=status.sha256, state=status.state,
                      error=status.error, seen_seconds_ago=round(status.seen_seconds_ago, 1))


def promotion_proto(promotion: Promotion) -> pb.Promotion:
    return pb.Promotion(action=promotion.action, from_version=promotion.from_version,
                        to_version=promotion.to_version, why=promotion.why, when=promotion.when, job=promotion.job)
