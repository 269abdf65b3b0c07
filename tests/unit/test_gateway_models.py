"""The gateway's Models service against a stand-in registry (pure logic): records as the API shows them, the
active pointer beside the replicas' reports, limits, and the admin calls — scope, compare-and-set, no-ops."""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from pydantic import SecretStr

from digits.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from digits.platform.registry import ModelRecord, Promotion, RegistryView
from digits.settings import Settings
from digits.v1 import models_pb2 as pb
from services.gateway.models import Models, promotion_proto, replica_proto, to_proto
from services.gateway.replicas import ReplicaStatus
from tests.unit.test_gateway_auth import ADMIN, TRAINING, FakeContext


def record(version: str, **more: Any) -> ModelRecord:
    fields: dict[str, Any] = {
        "version": version, "kind": "svc", "params": {"C": 5.0}, "metrics": {"accuracy": 0.97, "f1_weighted": 0.96},
        "dataset": {"source": "mnist", "size": 70000, "digest": "d1"}, "created_at": "2024-01-01T00:00:00Z",
        "parent": "", "sha256": f"sha-{version}", "signature": "sig", "blob_size": 1234,
        "report": {"winner": "svc"}, **more,
    }
    return ModelRecord(**fields)


class FakeRegistry:
    def __init__(self, versions: tuple[str, ...] = ("v3", "v2", "v1"), active: str | None = "v2") -> None:
        self.records = {v: record(v) for v in versions}
        self.active = active
        self.pins: set[str] = {"v1"}
        self.activations: list[tuple[str, str | None, str]] = []
        self.lose_the_race = False
        self.list_limits: list[int] = []

    def view(self, limit: int = 50) -> RegistryView:
        self.list_limits.append(limit)
        return RegistryView(list(self.records.values())[:limit], self.active or "", frozenset(self.pins))

    def view_of(self, version: str, *, with_report: bool = True) -> RegistryView:
        return RegistryView([self.records[version]], self.active or "", frozenset(self.pins))

    def active_version(self) -> str | None:
        return self.active

    def pinned(self) -> set[str]:
        return set(self.pins)

    def get(self, version: str, *, with_report: bool = True) -> ModelRecord:
        return self.records[version]

    def check_servable(self, version: str) -> ModelRecord:
        return self.records[version]

    def activate(self, version: str, *, expected: str | None, why: str, **more: Any) -> bool:
        self.activations.append((version, expected, why))
        if self.lose_the_race:
            return False
        self.active = version
        return True

    def rollback(self, *, why: str) -> tuple[str, str]:
        self.activations.append(("rollback", self.active, why))
        return "v2", "v1"

    def pin(self, version: str, pinned: bool) -> None:
        (self.pins.add if pinned else self.pins.discard)(version)

    def promotions(self, count: int = 100) -> builtins.list[Promotion]:
        return [Promotion("1-0", "activate", "v1", "v2", "better", "2024-01-02T00:00:00Z", "job-9")][:count]


class FakeReplicas:
    def __init__(self, statuses: list[ReplicaStatus]) -> None:
        self.statuses = statuses

    def snapshot(self) -> list[ReplicaStatus]:
        return self.statuses


SETTINGS = Settings(admin_token=SecretStr(ADMIN), training_token=SecretStr(TRAINING))
ADMIN_CALL = FakeContext((("authorization", f"Bearer {ADMIN}"),))


def service(registry: FakeRegistry, statuses: list[ReplicaStatus] | None = None) -> Models:
    return Models(registry, FakeReplicas(statuses or []), SETTINGS)  # type: ignore[arg-type]


def test_a_record_as_the_api_shows_it() -> None:
    model = to_proto(record("v2", metrics={"accuracy": 0.9}, job_id="job-1", fitted_on="all"),
                     RegistryView([], "v2", frozenset({"v2"})))
    assert (model.version, model.kind, model.active, model.pinned) == ("v2", "svc", True, True)
    assert json.loads(model.params_json) == {"C": 5.0} and json.loads(model.metrics_json) == {"accuracy": 0.9}
    assert model.accuracy == pytest.approx(0.9) and model.f1_weighted == 0.0  # a missing figure reads as 0
    assert (model.dataset.source, model.dataset.size, model.dataset.digest) == ("mnist", 70000, "d1")
    assert (model.job_id, model.fitted_on, model.sha256, model.blob_size) == ("job-1", "all", "sha-v2", 1234)
    other = to_proto(record("v3", dataset={}), RegistryView([], "v2", frozenset()))
    assert not other.active and not other.pinned and other.dataset.size == 0 and other.dataset.source == ""


def test_replicas_and_promotions_as_the_api_shows_them() -> None:
    status = ReplicaStatus("host:50052", "v1", "sha-v1", "failing", "bad blob", seen_at=0.0)
    replica = replica_proto(status)
    assert (replica.id, replica.version, replica.state, replica.error) == ("host:50052", "v1", "failing", "bad blob")
    assert replica.seen_seconds_ago >= 0 and replica.seen_seconds_ago == round(replica.seen_seconds_ago, 1)
    promotion = promotion_proto(Promotion("1-0", "rollback", "v2", "v1", "bad", "when", "job"))
    assert (promotion.action, promotion.from_version, promotion.to_version, promotion.why) == (
        "rollback", "v2", "v1", "bad")


def test_the_list_shows_the_active_pointer_beside_what_each_replica_serves() -> None:
    registry = FakeRegistry(active="v2")
    statuses = [ReplicaStatus("a", "v2", "sha-v2", "serving", "", 0.0),
                ReplicaStatus("b", "v1", "sha-v1", "failing", "cannot load v2", 0.0)]
    answer = asyncio.run(service(registry, statuses).ListModels(pb.ListModelsRequest(), ADMIN_CALL))  # type: ignore[arg-type]
    assert answer.active_version == "v2"
    assert [(m.version, m.active, m.pinned) for m in answer.models] == [
        ("v3", False, False), ("v2", True, False), ("v1", False, True)]
    assert [(r.id, r.version, r.state) for r in answer.replicas] == [("a", "v2", "serving"), ("b", "v1", "failing")]
    disagreeing = [r.id for r in answer.replicas if r.version != answer.active_version]
    assert disagreeing == ["b"]


def test_the_list_limit_defaults_to_50_and_is_capped_at_1000() -> None:
    registry = FakeRegistry(active=None)
    models = service(registry)
    for limit in (0, 2, 5000):
        answer = asyncio.run(models.ListModels(pb.ListModelsRequest(limit=limit), ADMIN_CALL))  # type: ignore[arg-type]
        assert answer.active_version == ""
    assert registry.list_limits == [50, 2, 1000]


def test_get_model_carries_the_jobs_report() -> None:
    model = asyncio.run(service(FakeRegistry()).GetModel(pb.GetModelRequest(version="v3"), ADMIN_CALL))  # type: ignore[arg-type]
    assert model.version == "v3" and json.loads(model.report_json) == {"winner": "svc"}


def test_activation_is_a_compare_and_set_on_the_pointer_read() -> None:
    registry = FakeRegistry(active="v2")
    models = service(registry)
    answer = asyncio.run(models.ActivateModel(pb.ActivateModelRequest(version="v3"), ADMIN_CALL))  # type: ignore[arg-type]
    assert (answer.previous_version, answer.active_version) == ("v2", "v3")
    assert registry.activations == [("v3", "v2", "manual activation")]

    asyncio.run(models.ActivateModel(pb.ActivateModelRequest(version="v3", reason="again"), ADMIN_CALL))  # type: ignore[arg-type]
    assert len(registry.activations) == 1  # already active: nothing to do, nothing logged as a promotion

    registry.lose_the_race = True
    with pytest.raises(FailedPrecondition, match="another promotion changed the active model"):
        asyncio.run(models.ActivateModel(pb.ActivateModelRequest(version="v1", reason="x"), ADMIN_CALL))  # type: ignore[arg-type]


def test_changes_need_a_token_with_the_models_scope() -> None:
    registry = FakeRegistry()
    models = service(registry)
    training = FakeContext((("authorization", f"Bearer {TRAINING}"),))
    anonymous = FakeContext(())
    calls: list[Callable[[Any], Coroutine[Any, Any, Any]]] = [
        lambda context: models.ActivateModel(pb.ActivateModelRequest(version="v3"), context),
        lambda context: models.Rollback(pb.RollbackRequest(), context),
        lambda context: models.PinModel(pb.PinModelRequest(version="v3", pinned=True), context),
    ]
    for call in calls:
        with pytest.raises(PermissionDenied):
            asyncio.run(call(training))
        with pytest.raises(Unauthenticated):
            asyncio.run(call(anonymous))
    assert registry.activations == [] and registry.pins == {"v1"}
    # Reading needs no token.
    asyncio.run(models.ListModels(pb.ListModelsRequest(), anonymous))  # type: ignore[arg-type]
    asyncio.run(models.ListPromotions(pb.ListPromotionsRequest(), anonymous))  # type: ignore[arg-type]


def test_rollback_and_pinning_answer_with_the_new_state() -> None:
    registry = FakeRegistry()
    models = service(registry)
    answer = asyncio.run(models.Rollback(pb.RollbackRequest(), ADMIN_CALL))  # type: ignore[arg-type]
    assert (answer.previous_version, answer.active_version) == ("v2", "v1")
    assert registry.activations[-1][2] == "manual rollback"
    pinned = asyncio.run(models.PinModel(pb.PinModelRequest(version="v3", pinned=True), ADMIN_CALL))  # type: ignore[arg-type]
    assert pinned.version == "v3" and pinned.pinned
    unpinned = asyncio.run(models.PinModel(pb.PinModelRequest(version="v1", pinned=False), ADMIN_CALL))  # type: ignore[arg-type]
    assert not unpinned.pinned and registry.pins == {"v3"}
    promotions = asyncio.run(models.ListPromotions(pb.ListPromotionsRequest(), ADMIN_CALL))  # type: ignore[arg-type]
    assert [(p.to_version, p.job) for p in promotions.promotions] == [("v2", "job-9")]
