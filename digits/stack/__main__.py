"""``python -m digits.stack up|down|status|logs|supervise`` (what ``make up`` and friends run)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import docker
import numpy as np
from docker.models.containers import Container
from PIL import Image

from digits.client.progress import ProgressReport
from digits.errors import FailedPrecondition, IntegrityError, NotServable
from digits.mnist import SHAPE
from digits.platform import healthcheck
from digits.settings import get_settings
from digits.stack import compose, engine, secrets
from digits.stack.local import REPO, LocalStack
from digits.stack.supervisor import Supervisor

RUN_DIR = REPO / ".run"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digits.stack")
    parser.add_argument("command", choices=["up", "down", "status", "logs", "supervise", "secrets"])
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    parser.add_argument("--lines", type=int, default=30, help="logs: lines per service")
    args = parser.parse_args(argv)
    if args.command == "secrets":
        print(secrets.env_file(secrets.generate()), end="")
        return 0
    client = engine.engine() if get_settings().stack != "local" and args.command != "supervise" else None
    if client is not None:
        return compose_mode(client, args)
    stack = LocalStack.from_environment(args.run_dir)
    return {"up": up, "down": down, "status": status, "logs": logs, "supervise": supervise}[args.command](
        stack, args
    )


def compose_mode(client: docker.DockerClient, args: argparse.Namespace) -> int:
    """The stack under Docker Compose: up and down through the compose CLI (the SDK has no compose), status and logs
    through the SDK, from the containers labelled with the compose project's name."""
    print("Docker engine found: running the stack with Docker Compose (DIGITS_STACK=local to run processes).")
    if args.command in ("status", "logs"):
        containers = engine.project_containers(client, compose.project_name())
        if not containers:
            print("The compose stack is not running (make up starts it).")
            return 1
        return compose_status(containers) if args.command == "status" else compose_logs(containers, args.lines)
    env_file = args.run_dir / "compose.env"
    if not env_file.exists():
        args.run_dir.mkdir(parents=True, exist_ok=True)
        env_file.write_text(secrets.env_file(secrets.generate()))
        env_file.chmod(0o600)
        print(f"Made the stack's secrets in {env_file} (the CLI needs its DIGITS_ADMIN_TOKEN).")
    compose_cli = ["docker", "compose", "-f", str(compose.COMPOSE_FILE), "--env-file", str(env_file)]
    verbs = {"up": ["up", "-d", "--build", "--wait"], "down": ["down"]}
    return subprocess.run([*compose_cli, *verbs[args.command]], check=False).returncode


def compose_status(containers: list[Container]) -> int:
    print("\n".join(engine.status_lines(containers)))
    return 0 if all(engine.healthy(c) for c in containers) else 1


def compose_logs(containers: list[Container], lines: int) -> int:
    for container in containers:
        print(f"==> {engine.service_of(container)} ({container.name}) <==")
        print(engine.recent_logs(container, lines), end="")
    return 0


def up(stack: LocalStack, args: argparse.Namespace) -> int:
    print("No Docker engine answers: running the stack as local processes (logs and pids in "
          f"{stack.run_dir.relative_to(REPO) if stack.run_dir.is_relative_to(REPO) else stack.run_dir}/).")
    if stack.start():
        print(f"Started redis, inference x{len(stack.ports.inference)}, gateway and trainer.")
    else:
        print("The stack is already running; nothing started twice.")
    stack.wait_until_up(timeout=90)
    why = _why_train_first(stack)
    if why:
        data = stack.env.get("DIGITS_DATA", "sample")
        print(f"{why}: training the production recipe on '{data}' ...")
        report = ProgressReport(sys.stdout)
        try:
            job = stack.retrain(on_progress=report)
        finally:
            report.finish()
        if job.status != "finished":
            print(f"Training failed: {job.error}", file=sys.stderr)
            return 1
        if not job.outcome.startswith("activated"):
            stack.activate(job.version, reason=f"make up: {why}")
        print(job.outcome if job.outcome.startswith("activated") else f"activated {job.version}")
    stack.wait_until_serving(timeout=120)
    sample = write_sample_digit(stack.run_dir)
    print(f"""
Digits is up (model {stack.active_version()}).
  gRPC    127.0.0.1:{stack.ports.gateway_grpc}   (digits.v1.Recognizer / Models / Training, health, reflection)
  HTTP    http://127.0.0.1:{stack.ports.gateway_http}/   (POST /api/predict, /metrics, /healthz)
  Redis   {stack.ports.redis_url}
Try:  .venv/bin/digits predict {sample.relative_to(REPO) if sample.is_relative_to(REPO) else sample}
Stop: make down""")
    return 0


def _why_train_first(stack: LocalStack) -> str:
    """Why `make up` must train a model before the stack can serve ("" when it need not)."""
    active = stack.active_version()
    if not active:
        return "The registry has no active model"
    try:
        stack.registry().check_servable(active)
    except (IntegrityError, NotServable, FailedPrecondition) as error:
        # A registry kept in .run/ from an older Digits (HMAC-signed) or another key pair: nothing would serve.
        return f"The active model {active} cannot serve ({error})"
    return ""


def write_sample_digit(run_dir: Path) -> Path:
    """A real MNIST digit as a PNG (dark ink on white, like a scan), for the first command to try."""
    from digits.training.datasets import load_sample

    data = load_sample()
    index = int(np.flatnonzero(data.labels == 7)[-1])
    path = run_dir / "sample-7.png"
    picture = 255 - data.pixels[index].reshape(SHAPE)
    Image.fromarray(picture.astype(np.uint8)).resize((140, 140), Image.Resampling.LANCZOS).save(path)
    return path


def down(stack: LocalStack, args: argparse.Namespace) -> int:
    print("Stopped the local stack." if stack.stop() else "Nothing was running.")
    return 0


def status(stack: LocalStack, args: argparse.Namespace) -> int:
    if stack.supervisor_pid() is None:
        print("The local stack is not running (make up starts it).")
        return 1
    state = (stack.run_dir / "processes.json")
    print(f"supervisor pid {stack.supervisor_pid()}; processes: {state.read_text() if state.exists() else '{}'}")
    for name, address, service in [("gateway", stack.ports.gateway, ""),
                                   ("gateway Predict", stack.ports.gateway, "digits.v1.Recognizer")]:
        print(f"{name:16} {'SERVING' if healthcheck.is_serving(address, service) else 'NOT SERVING'}")
    for port in stack.ports.inference:
        ready = healthcheck.is_serving(f"127.0.0.1:{port}", "digits.v1.Recognizer")
        print(f"inference :{port} {'SERVING' if ready else 'NOT SERVING'}")
    print(f"active model     {stack.active_version() or 'none'}")
    return 0


def logs(stack: LocalStack, args: argparse.Namespace) -> int:
    for path in sorted((stack.run_dir / "logs").glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-args.lines:]
        print(f"==> {path.name} <==")
        print("\n".join(lines))
    return 0


def supervise(stack: LocalStack, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s")
    Supervisor(stack.processes(), stack.run_dir, REPO).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
