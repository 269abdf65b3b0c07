"""``digits``: the command line, talking to the gateway over gRPC (``DIGITS_GATEWAY``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

from digits.candidates import CANDIDATES
from digits.settings import get_settings
from digits.v1 import (
    models_pb2,
    models_pb2_grpc,
    recognizer_pb2,
    recognizer_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader went away (`digits models | head -1`): stop quietly, as Unix tools do, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    with grpc.insecure_channel(args.gateway or settings.gateway) as channel:
        client = Client(channel, settings.admin_token.get_secret_value())
        try:
            return int(args.run(client, args) or 0)
        except grpc.RpcError as error:
            print(f"digits: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130


class Client:
    def __init__(self, channel: grpc.Channel, admin_token: str) -> None:
        self.recognizer = recognizer_pb2_grpc.RecognizerStub(channel)
        self.models = models_pb2_grpc.ModelsStub(channel)
        self.training = training_pb2_grpc.TrainingStub(channel)
        self.admin = (("authorization", f"Bearer {admin_token}"),)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digits", description="Talk to a Digits gateway.")
    parser.add_argument("--gateway", help="host:port of the gateway's gRPC port (default: $DIGITS_GATEWAY)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="read the digit in each image file")
    predict.add_argument("files", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.set_defaults(run=_predict)

    retrain = commands.add_parser("retrain", help="enqueue a retrain job")
    retrain.add_argument("--data", default="", help="sample, idx:DIR or openml (default: the trainer's DIGITS_DATA)")
    retrain.add_argument("--seed", type=int, default=0)
    retrain.add_argument("--limit", type=int, default=0, help="train on at most this many digits")
    retrain.add_argument("--no-activate", action="store_true", help="register the winner without activating it")
    retrain.add_argument("--timeout", type=int, default=0, help="give up after this many seconds")
    retrain.add_argument("--candidates", default="", help="comma-separated, e.g. svc,svc-shift,hist-gb,vote-soft "
                         f"(known: {', '.join(CANDIDATES)})")
    retrain.add_argument("--params", default="", help='per-candidate parameters as JSON: {"hist-gb": {"max_iter": 30}}')
    retrain.add_argument("--top-n", type=int, default=0, help="how many base models the ensembles combine")
    retrain.add_argument("--min-gain", type=float, default=0.0, help="accuracy the winner must add to be activated")
    retrain.add_argument("--parallel", action="store_true", help="one job per candidate, over every worker")
    retrain.add_argument("--no-final-fit", action="store_true",
                         help="register the winner as fitted on the split (quicker), not refitted on every digit")
    retrain.add_argument("--wait", action="store_true", help="follow the job to its end with a progress bar")
    retrain.set_defaults(run=_retrain)

    jobs = commands.add_parser("jobs", help="list retrain jobs, or show / cancel one")
    jobs.add_argument("action", nargs="?", choices=["list", "show", "cancel"], default="list")
    jobs.add_argument("id", nargs="?")
    jobs.set_defaults(run=_jobs)

    models = commands.add_parser("models", help="list, show, activate, roll back or pin model versions; history")
    models.add_argument("action", nargs="?", default="list",
                        choices=["list", "show", "activate", "rollback", "pin", "unpin", "history"])
    models.add_argument("version", nargs="?")
    models.add_argument("--reason", default="", help="recorded in the promotion log")
    models.set_defaults(run=_models)

    # Everything after `bench` goes to `python -m bench` unparsed ("+" so that "--duration" is not taken as ours).
    bench = commands.add_parser("bench", prefix_chars="+", add_help=False,
                                help="measure latency and throughput on a local stack (python -m bench --help)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_bench)
    return parser


def _bench(client: Client, args: argparse.Namespace) -> int:
    import subprocess

    repo = Path(__file__).resolve().parents[1]  # bench/ lives beside digits/, outside the installed packages
    return subprocess.call([sys.executable, "-m", "bench", *args.bench_args], cwd=repo)


def _predict(client: Client, args: argparse.Namespace) -> int:
    failures = 0
    for path in args.files:
        try:
            answer = client.recognizer.Predict(recognizer_pb2.PredictRequest(image=path.read_bytes()), timeout=30)
        except (OSError, grpc.RpcError) as error:
            failures += 1
            reason = error.details() if isinstance(error, grpc.RpcError) else str(error)
            _emit(args.json, {"file": str(path), "error": reason}, f"{path}: error: {reason}")
            continue
        row = {"file": str(path), "digit": answer.digit, "confidence": round(answer.confidence, 4),
               "version": answer.version}
        _emit(args.json, row, f"{path}: {answer.digit} (confidence {answer.confidence:.2f}, model {answer.version})")
    return 1 if failures else 0


def _emit(as_json: bool, row: dict[str, Any], text: str) -> None:
    print(json.dumps(row) if as_json else text, flush=True)


def _retrain(client: Client, args: argparse.Namespace) -> int:
    job = client.training.Retrain(
        training_pb2.RetrainRequest(
            data=args.data, seed=args.seed, limit=args.limit, no_activate=args.no_activate,
            timeout_seconds=args.timeout, candidates=[c for c in args.candidates.split(",") if c],
            params_json=args.params, top_n=args.top_n, min_gain=args.min_gain, parallel=args.parallel,
            no_final_fit=args.no_final_fit,
        ),
        metadata=client.admin, timeout=30,
    )
    print(f"job {job.id} enqueued")
    if not args.wait:
        return 0
    for update in client.training.WatchJob(training_pb2.GetJobRequest(id=job.id), metadata=client.admin):
        progress_bar(update)
        job = update
    print()
    if job.status != "finished":
        print(f"job {job.id} {job.status}: {job.error}", file=sys.stderr)
        return 1
    print(job.outcome)
    return 0


def progress_bar(job: training_pb2.Job, width: int = 30) -> None:
    filled = round(job.progress * width)
    bar = "#" * filled + "-" * (width - filled)
    print(f"\r[{bar}] {job.progress * 100:5.1f}%  {job.status}: {job.stage[:60]:<60}", end="", flush=True)


def _jobs(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        reply = client.training.ListJobs(training_pb2.ListJobsRequest(), metadata=client.admin, timeout=30)
        _table(["JOB", "STATUS", "STAGE", "VERSION", "ENQUEUED", "OUTCOME / ERROR"],
               ([j.id[:12], j.status, j.stage[:30], j.version, j.enqueued_at, (j.outcome or j.error)[:80]]
                for j in reply.jobs))
        return 0
    if not args.id:
        print("digits jobs show|cancel needs a job id", file=sys.stderr)
        return 2
    request = training_pb2.GetJobRequest(id=args.id)
    call = client.training.GetJob if args.action == "show" else client.training.CancelJob
    job = call(request, metadata=client.admin, timeout=30)
    print(json.dumps(_job_dict(job), indent=2))
    return 0


def _job_dict(job: training_pb2.Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "stage": job.stage, "progress": job.progress, "error": job.error,
            "version": job.version, "outcome": job.outcome, "enqueued_at": job.enqueued_at,
            "started_at": job.started_at, "ended_at": job.ended_at, "spec": json.loads(job.spec_json or "{}"),
            "result": json.loads(job.result_json or "{}")}


def _models(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        reply = client.models.ListModels(models_pb2.ListModelsRequest(), timeout=30)
        _table(["", "VERSION", "KIND", "ACCURACY", "F1", "DATA", "CREATED", "NOTE"],
               (["*" if m.active else "", m.version, m.kind, f"{m.accuracy:.4f}", f"{m.f1_weighted:.4f}",
                 f"{m.dataset.source} ({m.dataset.size})", m.created_at, _note(m)] for m in reply.models))
        _replicas(reply)
        return 0
    if args.action == "history":
        promotions = client.models.ListPromotions(models_pb2.ListPromotionsRequest(), timeout=30).promotions
        _table(["WHEN", "ACTION", "FROM", "TO", "JOB", "WHY"],
               ([p.when, p.action, p.from_version or "-", p.to_version, p.job[:12], p.why] for p in promotions))
        return 0
    if args.action == "rollback":
        done = client.models.Rollback(models_pb2.RollbackRequest(reason=args.reason), metadata=client.admin,
                                      timeout=30)
        print(f"rolled back from {done.previous_version} to {done.active_version}")
        return 0
    if not args.version:
        print(f"digits models {args.action} needs a version", file=sys.stderr)
        return 2
    if args.action in ("pin", "unpin"):
        model = client.models.PinModel(models_pb2.PinModelRequest(version=args.version, pinned=args.action == "pin"),
                                       metadata=client.admin, timeout=30)
        print(f"{model.version} {'pinned: retention never prunes it' if model.pinned else 'unpinned'}")
        return 0
    if args.action == "activate":
        done = client.models.ActivateModel(
            models_pb2.ActivateModelRequest(version=args.version, reason=args.reason), metadata=client.admin,
            timeout=60,
        )
        print(f"active: {done.active_version} (was {done.previous_version or 'none'})")
        return 0
    model = client.models.GetModel(models_pb2.GetModelRequest(version=args.version), timeout=30)
    _show_model(model)
    return 0


def _note(model: models_pb2.Model) -> str:
    return ", ".join(word for word, on in (("pinned", model.pinned), ("pruned", bool(model.pruned_at))) if on)


def _replicas(reply: models_pb2.ListModelsResponse) -> None:
    """Which version each replica serves, and a warning when one disagrees with the active pointer."""
    if not reply.replicas:
        print("\nreplicas: none reported in the last few seconds")
        return
    print()
    _table(["REPLICA", "SERVES", "STATE", "WHY"],
           ([r.id, r.version or "-", r.state, r.error[:80]] for r in reply.replicas))
    behind = [r.id for r in reply.replicas if r.version != reply.active_version]
    if behind:
        print(f"warning: {len(behind)} of {len(reply.replicas)} replicas do not serve the active version "
              f"{reply.active_version}: {', '.join(behind)}", file=sys.stderr)


def _show_model(model: models_pb2.Model) -> None:
    metrics = json.loads(model.metrics_json or "{}")
    report = json.loads(model.report_json or "{}")
    print(f"{model.version}{' (active)' if model.active else ''}: {model.kind} {model.params_json}")
    print(f"  trained {model.created_at} on {model.dataset.source}, {model.dataset.size} digits "
          f"(sha256 {model.dataset.digest[:12]}), job {model.job_id}, code {model.code_version}")
    print(f"  validation: accuracy {model.accuracy:.4f}, weighted F1 {model.f1_weighted:.4f} "
          f"on {metrics.get('validation_size', '?')} digits; fit {metrics.get('fit_seconds', '?')} s on "
          f"{metrics.get('train_size', '?')} digits")
    final = metrics.get("final_fit")
    if model.fitted_on == "all" and final:
        print(f"  served model: refitted on all {final['train_size']} digits in {final['fit_seconds']} s (the "
              "figures above are the split fit's)")
    if "n_support_vectors" in metrics:
        print(f"  support vectors: {metrics['n_support_vectors']}")
    per_class = metrics.get("f1_per_class") or []
    if per_class:
        print("  F1 by digit: " + "  ".join(f"{d}:{f:.3f}" for d, f in enumerate(per_class)))
    for sentence in metrics.get("confusions", []):
        print(f"  {sentence}")
    if report.get("gate"):
        print(f"  gate: {report['gate']}")
    if report.get("candidates"):
        print()
        _table(["CANDIDATE", "ACCURACY", "F1", "FIT S", "MS/IMAGE", "SIZE MB", "SV"],
               ([("* " if c["name"] == report.get("winner") else "  ") + c["name"], *_figures(c)]
                for c in report["candidates"]))


def _figures(row: dict[str, Any]) -> list[str]:
    if "error" in row:
        return ["failed: " + row["error"][:60], "", "", "", "", ""]
    return [f"{row['accuracy']:.4f}", f"{row['f1_weighted']:.4f}", f"{row['fit_seconds']:.1f}",
            f"{row['predict_ms_per_image']:.3f}", f"{row['serialized_bytes'] / 1e6:.1f}",
            str(row.get("n_support_vectors", "-"))]


def _table(header: list[str], rows: Iterable[list[str]]) -> None:
    lines = [header, *rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
