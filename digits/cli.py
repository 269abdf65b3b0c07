"""``digits``: the command line, talking to the gateway through ``digits.client`` (``DIGITS_GATEWAY``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from digits import package_version
from digits.client import Client, Correction, DigitsClientError, Job, Model, ModelList, Prediction, RetrainOptions
from digits.client.progress import ProgressReport
from digits.training.candidates import CANDIDATES

BOOTSTRAP_REASON = "bootstrap: the first model"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader went away (`digits models | head -1`): stop quietly, as Unix tools do, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives a list of positionals (`corrections accept ID...`) what precedes an option and leaves what
    # follows it (`corrections accept --json ID ID`): those ids are the list's too.
    if extra and isinstance(getattr(args, "ids", None), list) and not any(e.startswith("-") for e in extra):
        args.ids += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        client = Client(args.gateway, tls_ca_file=args.tls_ca, insecure=args.insecure, token=args.token)
    except (ValueError, OSError) as error:  # options that contradict each other, a CA file that cannot be read
        print(f"digits: {error}", file=sys.stderr)
        return 2
    try:
        with client:
            if args.wait_for_gateway:
                client.wait_until_ready(args.wait_for_gateway)
            return int(args.run(client, args) or 0)
    except DigitsClientError as error:
        print(f"digits: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digits", description="Talk to a Digits gateway.")
    parser.add_argument("--version", action="version", version=f"digits {package_version()}")
    parser.add_argument("--gateway", help="host:port of the gateway's gRPC port (default: $DIGITS_GATEWAY)")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls-ca", type=Path, metavar="FILE",
                     help="speak TLS, verifying the gateway with these CA certificates (PEM; $DIGITS_TLS_CA_FILE)")
    tls.add_argument("--tls", dest="insecure", action="store_const", const=False,
                     help="speak TLS, verifying the gateway with the system's CAs")
    tls.add_argument("--insecure", dest="insecure", action="store_const", const=True,
                     help="speak plaintext (default: plaintext to a loopback address only; $DIGITS_INSECURE)")
    parser.add_argument("--token", help="bearer token for Models writes and Training calls (default: $DIGITS_TOKEN, "
                                        "else $DIGITS_ADMIN_TOKEN; the variable keeps it out of `ps`)")
    parser.add_argument("--wait-for-gateway", type=float, default=0, metavar="SECONDS",
                        help="wait up to SECONDS for the gateway to accept a connection before the first call")
    # Every command has --json: one JSON object per line (per item for lists).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", parents=[common], help="read the digit in each image file")
    predict.add_argument("files", nargs="+", type=Path, metavar="IMAGE")
    predict.set_defaults(run=_predict)

    correct = commands.add_parser("correct", parents=[common],
                                  help="say what a prediction really was (its id is in `predict`'s answer)")
    correct.add_argument("id", metavar="PREDICTION_ID")
    correct.add_argument("truth", metavar="DIGIT", type=_truth, help="0 to 9, or not-a-digit")
    correct.set_defaults(run=_correct)

    corrections = commands.add_parser("corrections", parents=[common],
                                      help="review corrections: list, show, accept, reject or delete (admin)")
    corrections.add_argument("action", nargs="?", default="list",
                             choices=["list", "show", "accept", "reject", "delete"])
    corrections.add_argument("ids", nargs="*", metavar="PREDICTION_ID")
    corrections.add_argument("--status", default="", choices=["", "pending", "accepted", "rejected"],
                             help="list only those (default: all)")
    corrections.add_argument("--limit", type=int, default=0, help="list at most this many (default 50)")
    corrections.set_defaults(run=_corrections)

    retrain = commands.add_parser("retrain", parents=[common], help="enqueue a retrain job")
    retrain.add_argument("--data", default="", help="sample, idx:DIR, openml or folder:DIR (DIR/0/*.png ... "
                         "DIR/9/*.png), or several joined by + (sample+folder:DIR); a path the trainer reads "
                         "(default: the trainer's DIGITS_DATA)")
    retrain.add_argument("--seed", type=int, default=0)
    retrain.add_argument("--limit", type=int, default=0,
                         help="train on at most this many digits (of each part of a combination)")
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
    retrain.add_argument("--if-no-model", action="store_true",
                         help="bootstrap: do nothing if a model is active; follow a retrain already under way rather "
                              "than start another; activate what it registers (implies --wait)")
    retrain.set_defaults(run=_retrain)

    jobs = commands.add_parser("jobs", parents=[common], help="list retrain jobs, or show / cancel one")
    jobs.add_argument("action", nargs="?", choices=["list", "show", "cancel"], default="list")
    jobs.add_argument("id", nargs="?")
    jobs.set_defaults(run=_jobs)

    models = commands.add_parser("models", parents=[common],
                                 help="list, show, activate, roll back or pin model versions; history")
    models.add_argument("action", nargs="?", default="list",
                        choices=["list", "show", "activate", "rollback", "pin", "unpin", "history"])
    models.add_argument("version", nargs="?")
    models.add_argument("--reason", default="", help="recorded in the promotion log")
    models.set_defaults(run=_models)

    # Everything after `bench` goes to `python -m bench` unparsed ("+" so that "--duration" is not taken as ours);
    # it writes its results as JSON files of its own.
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
            answer = client.predict(path)
        except (OSError, DigitsClientError) as error:
            failures += 1
            reason = error.details if isinstance(error, DigitsClientError) else str(error)
            _emit(args.json, {"file": str(path), "error": reason}, f"{path}: error: {reason}")
            continue
        _emit(args.json, _prediction_row(path, answer), f"{path}: {_read_as(answer)}")
    return 1 if failures else 0


def _prediction_row(path: Path, answer: Prediction) -> dict[str, Any]:
    """``predict --json``'s row: the keys of the gateway's JSON prediction (/api/predict), scores rounded."""
    return {"file": str(path), "digit": answer.digit, "confidence": round(answer.confidence, 4),
            "version": answer.version, "prediction_id": answer.prediction_id, "verdict": answer.verdict,
            "runner_up": answer.runner_up, "familiarity": _rounded(answer.familiarity),
            "margin": _rounded(answer.margin), "marks": answer.marks}


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 4)


def _read_as(answer: Prediction) -> str:
    """An answer as a person reads it: the digit, or what the verdict says instead, then the figures."""
    figures = f"confidence {answer.confidence:.2f}, model {answer.version}, id {answer.prediction_id}"
    if answer.verdict == "UNSURE":
        return f"{answer.digit} or maybe {answer.runner_up} (unsure, {figures})"
    if answer.verdict == "NOT_A_DIGIT":
        return f"not a digit (reads most like {answer.digit}, {figures})"
    if answer.verdict == "SEVERAL":
        return f"several digits ({answer.marks} marks, {figures})"
    return f"{answer.digit} ({figures})"  # DIGIT, or not judged


NOT_A_DIGIT = "not-a-digit"


def _truth(text: str) -> int | None:
    """A correction's DIGIT: 0 to 9, or not-a-digit (None)."""
    if text.strip().lower() in {NOT_A_DIGIT, "not_a_digit", "none"}:
        return None
    if text.strip() in {str(d) for d in range(10)}:
        return int(text)
    raise argparse.ArgumentTypeError(f"DIGIT is 0 to 9 or {NOT_A_DIGIT}, not {text!r}")


def _said(correction: Correction) -> str:
    return "not a digit" if correction.digit is None else str(correction.digit)


def _correction_row(correction: Correction) -> dict[str, Any]:
    row = asdict(correction)
    row["model_input"] = list(correction.model_input) if correction.model_input else None
    return row


def _correct(client: Client, args: argparse.Namespace) -> int:
    done = client.correct(args.id, args.truth)
    after = "accepted" if done.status == "accepted" else f"{done.status}: an admin will review it"
    again = "" if done.created else " (already received)"
    _emit(args.json, _correction_row(done), f"{done.prediction_id}: {_said(done)}, where model "
                                            f"{done.model_version} said {done.predicted_digit}; {after}{again}")
    return 0


def _corrections(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        listed = client.corrections(args.status, args.limit)
        if args.json:
            _lines(_correction_row(c) for c in listed.corrections)
            return 0
        _table(["PREDICTION", "STATUS", "SAID", "IS", "MODEL", "WHEN", "FROM", "REVIEWED BY"],
               ([c.prediction_id, c.status, str(c.predicted_digit), _said(c), c.model_version, c.created_at,
                 c.caller, c.reviewed_by] for c in listed.corrections))
        print(f"\n{listed.pending} pending, {listed.accepted} accepted, {listed.rejected} rejected "
              f"(room for {listed.capacity:,})")
        return 0
    if not args.ids:
        print(f"digits corrections {args.action} needs one or more prediction ids", file=sys.stderr)
        return 2
    for prediction_id in args.ids:
        if args.action == "show":
            shown = client.correction(prediction_id)
            if args.json:
                _emit(True, _correction_row(shown), "")
            else:
                _show_correction(shown)
        elif args.action == "delete":
            _emit(args.json, {"prediction_id": client.delete_correction(prediction_id), "deleted": True},
                  f"{prediction_id}: deleted")
        else:
            done = client.accept(prediction_id) if args.action == "accept" else client.reject(prediction_id)
            _emit(args.json, _correction_row(done), f"{done.prediction_id}: {done.status} ({_said(done)})")
    return 0


_INK = " .:-=+*#%@"  # from no ink to full ink


def _show_correction(correction: Correction) -> None:
    print(f"{correction.prediction_id}: {correction.status}; it is {_said(correction)}, model "
          f"{correction.model_version} said {correction.predicted_digit}")
    print(f"  sent {correction.created_at} from {correction.caller}"
          + (f"; reviewed {correction.reviewed_at} by {correction.reviewed_by}" if correction.reviewed_at else ""))
    if correction.model_input:
        print("  what the model saw (28x28):")
        pixels = correction.model_input
        for row in range(28):
            line = "".join(_INK[pixels[row * 28 + col] * (len(_INK) - 1) // 255] * 2 for col in range(28))
            print(f"  |{line}|")


def _emit(as_json: bool, row: dict[str, Any], text: str) -> None:
    print(json.dumps(row) if as_json else text, flush=True)


def _retrain(client: Client, args: argparse.Namespace) -> int:
    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as error:
        print(f"digits: --params is not JSON: {error}", file=sys.stderr)
        return 2
    options = RetrainOptions(
        data=args.data, seed=args.seed, limit=args.limit, no_activate=args.no_activate, timeout_seconds=args.timeout,
        candidates=[c for c in args.candidates.split(",") if c], params=params, top_n=args.top_n,
        min_gain=args.min_gain, parallel=args.parallel, no_final_fit=args.no_final_fit,
    )
    if args.if_no_model:
        return _bootstrap(client, options, args.json)
    job = client.retrain(**options)
    _emit(args.json, asdict(job), f"job {job.id} enqueued")
    return _exit_code(_follow(client, job, args.json)) if args.wait else 0


def _bootstrap(client: Client, options: RetrainOptions, as_json: bool) -> int:
    """Train the first model, once: what the Kubernetes bootstrap Job runs, as often as it likes."""
    active = client.models(limit=1).active_version
    if active:
        _emit(as_json, {"active_version": active, "outcome": "nothing to do"},
              f"model {active} is active: nothing to do")
        return 0
    job = next((j for j in client.jobs() if not j.ended), None)
    if job is not None:
        _emit(as_json, asdict(job), f"job {job.id} is already under way ({job.status}): following it")
    else:
        job = client.retrain(**options)
        _emit(as_json, asdict(job), f"job {job.id} enqueued")
    job = _follow(client, job, as_json)
    if job.status != "finished" or client.models(limit=1).active_version:
        return _exit_code(job)
    # A job that registered without activating (started with --no-activate, or by the training token).
    if not job.version:
        print(f"digits: job {job.id} registered no model", file=sys.stderr)
        return 1
    done = client.activate(job.version, reason=BOOTSTRAP_REASON)
    _emit(as_json, asdict(done), f"activated {done.active_version}")
    return 0


def _follow(client: Client, job: Job, as_json: bool) -> Job:
    """Watch a job to its end: JSON lines, or a progress bar (a terminal) / progress lines (anything else); then
    say how it ended."""
    if as_json:
        job = client.wait(job.id, on_progress=lambda update: _emit(True, asdict(update), ""))
    else:
        report = ProgressReport(sys.stdout)
        try:
            job = client.wait(job.id, on_progress=report)
        finally:
            report.finish()
    if job.status != "finished":
        print(f"job {job.id} {job.status}: {job.error}", file=sys.stderr)
    elif not as_json:
        print(job.outcome)
    return job


def _exit_code(job: Job) -> int:
    return 0 if job.status == "finished" else 1


def _jobs(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        listed = client.jobs()
        if args.json:
            _lines(asdict(j) for j in listed)
            return 0
        _table(["JOB", "STATUS", "STAGE", "VERSION", "ENQUEUED", "OUTCOME / ERROR"],
               ([j.id[:12], j.status, j.stage[:30], j.version, j.enqueued_at, (j.outcome or j.error)[:80]]
                for j in listed))
        return 0
    if not args.id:
        print("digits jobs show|cancel needs a job id", file=sys.stderr)
        return 2
    job = client.job(args.id) if args.action == "show" else client.cancel(args.id)
    print(json.dumps(asdict(job), indent=None if args.json else 2))
    return 0


def _lines(rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        print(json.dumps(row))


def _models(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        listed = client.models()
        if args.json:
            _lines(asdict(m) for m in listed.models)
        else:
            _table(["", "VERSION", "KIND", "ACCURACY", "F1", "DATA", "CREATED", "NOTE"],
                   (["*" if m.active else "", m.version, m.kind, f"{m.accuracy:.4f}", f"{m.f1_weighted:.4f}",
                     f"{m.dataset.source} ({m.dataset.size})", m.created_at, _note(m)] for m in listed.models))
            _replicas(listed)
        _warn_replicas_behind(listed)
        return 0
    if args.action == "history":
        promotions = client.history()
        if args.json:
            _lines(asdict(p) for p in promotions)
            return 0
        _table(["WHEN", "ACTION", "FROM", "TO", "JOB", "WHY"],
               ([p.when, p.action, p.from_version or "-", p.to_version, p.job[:12], p.why] for p in promotions))
        return 0
    if args.action == "rollback":
        done = client.rollback(args.reason)
        _emit(args.json, asdict(done), f"rolled back from {done.previous_version} to {done.active_version}")
        return 0
    if not args.version:
        print(f"digits models {args.action} needs a version", file=sys.stderr)
        return 2
    if args.action in ("pin", "unpin"):
        model = client.pin(args.version) if args.action == "pin" else client.unpin(args.version)
        _emit(args.json, asdict(model),
              f"{model.version} {'pinned: retention never prunes it' if model.pinned else 'unpinned'}")
        return 0
    if args.action == "activate":
        done = client.activate(args.version, args.reason)
        _emit(args.json, asdict(done), f"active: {done.active_version} (was {done.previous_version or 'none'})")
        return 0
    model = client.model(args.version)
    if args.json:
        _emit(True, asdict(model), "")
    else:
        _show_model(model)
    return 0


def _note(model: Model) -> str:
    return ", ".join(word for word, on in (("pinned", model.pinned), ("pruned", bool(model.pruned_at))) if on)


def _replicas(listed: ModelList) -> None:
    """Which version each replica serves."""
    if not listed.replicas:
        print("\nreplicas: none reported in the last few seconds")
        return
    print()
    _table(["REPLICA", "SERVES", "STATE", "WHY"],
           ([r.id, r.version or "-", r.state, r.error[:80]] for r in listed.replicas))


def _warn_replicas_behind(listed: ModelList) -> None:
    behind = [r.id for r in listed.replicas_behind]
    if behind:
        print(f"warning: {len(behind)} of {len(listed.replicas)} replicas do not serve the active version "
              f"{listed.active_version}: {', '.join(behind)}", file=sys.stderr)


def _show_model(model: Model) -> None:
    metrics, report = model.metrics, model.report
    print(f"{model.version}{' (active)' if model.active else ''}: {model.kind} {json.dumps(model.params)}")
    print(f"  trained {model.created_at} on {model.dataset.source}, {model.dataset.size} digits "
          f"(sha256 {model.dataset.digest[:12]}), job {model.job_id}, code {model.code_version}")
    _show_data_parts(report.get("dataset") or {})
    print(f"  validation: accuracy {model.accuracy:.4f}, weighted F1 {model.f1_weighted:.4f} "
          f"on {metrics.get('validation_size', '?')} digits; fit {metrics.get('fit_seconds', '?')} s on "
          f"{metrics.get('train_size', '?')} digits")
    final = metrics.get("final_fit")
    if "n_support_vectors" in metrics:
        print(f"  support vectors: {metrics['n_support_vectors']}")
    if model.fitted_on == "all" and final:
        vectors = f", {final['n_support_vectors']} support vectors" if "n_support_vectors" in final else ""
        print(f"  served model: refitted on all {final['train_size']} digits in {final['fit_seconds']} s{vectors} "
              "(the figures above are the split fit's)")
    per_class = metrics.get("f1_per_class") or []
    if per_class:
        print("  F1 by digit: " + "  ".join(f"{d}:{f:.3f}" for d, f in enumerate(per_class)))
    for sentence in metrics.get("confusions", []):
        print(f"  {sentence}")
    _show_verdicts(metrics)
    if report.get("gate"):
        print(f"  gate: {report['gate']}")
    if report.get("candidates"):
        print()
        _table(["CANDIDATE", "ACCURACY", "F1", "FIT S", "MS/IMAGE", "SIZE MB", "SV"],
               ([("* " if c["name"] == report.get("winner") else "  ") + c["name"], *_figures(c)]
                for c in report["candidates"]))


def _show_verdicts(metrics: dict[str, Any]) -> None:
    """The verdict's thresholds and how the validation digits were answered (/models/VERSION has the rest)."""
    verdicts = metrics.get("verdicts")
    if not isinstance(verdicts, dict):
        verdicts = {}
    calibration = verdicts.get("calibration")
    if not isinstance(calibration, dict):
        print("  verdicts: no calibrated thresholds; answers DIGIT or SEVERAL only")
        return
    thresholds = calibration.get("thresholds") or {}
    print(f"  verdict thresholds: familiarity {thresholds.get('familiarity', float('nan')):.3f}, "
          f"margin {thresholds.get('margin', float('nan')):.3f}")
    validation = verdicts.get("validation") or {}
    shares = validation.get("verdicts") or {}
    if shares:
        print("  validation verdicts: " + ", ".join(f"{name} {share:.2%}" for name, share in shares.items())
              + f"; wrong among DIGIT {validation.get('error_among_digit', float('nan')):.2%}")


def _show_data_parts(data: dict[str, Any]) -> None:
    """A combination's parts and the files a folder skipped (the first few; `--json` has every one named)."""
    parts = data.get("parts") or []
    if len(parts) < 2 and not data.get("skipped"):
        return
    for part in parts:
        count = part.get("skipped", 0)
        skipped = f", {count} {'file' if count == 1 else 'files'} skipped" if count else ""
        used = (f" ({part['fit']} fitted on, {part['validation']} kept to validate on)"
                if "fit" in part and "validation" in part else "")
        print(f"  data: {part.get('source')}, {part.get('size')} digits{used}{skipped}")
        for file in part.get("skipped_files", [])[:5]:
            print(f"    skipped {file.get('path')}: {file.get('reason')}")


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
