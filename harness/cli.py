"""The `latentgate` command line.

Each subcommand parses its arguments and calls one function of the package; the work itself
lives in the pipeline modules. Errors a user can cause (`LatentGateError`) are printed as one
message without a traceback, and the process exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from harness import __version__
from harness.errors import LatentGateError

log = logging.getLogger("harness.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentgate",
        description="Find class directions in a StyleGAN2 latent space, measure what else they "
        "change, and gate classifier versions on it.",
    )
    parser.add_argument("--version", action="version", version=f"latentgate {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages as well as info"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_generator_commands(commands)
    _add_suite_commands(commands)
    _add_run_command(commands)
    _add_demo_commands(commands)
    _add_gate_commands(commands)
    return parser


def _add_generator_commands(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser(
        "convert",
        help="convert a StyleGAN2 checkpoint to LatentGate's safetensors form",
        description="Convert a rosinality .pt, an NVIDIA stylegan2-ada .pkl or an NVIDIA state "
        "dict to a .safetensors file that stores the architecture and w_avg in its metadata.",
    )
    convert.add_argument("src", help="checkpoint to read")
    convert.add_argument("dst", help="output path, ending in .safetensors")
    convert.add_argument(
        "--force", action="store_true", help="overwrite DST if it already exists"
    )
    convert.set_defaults(handler=_run_convert)

    generate = commands.add_parser(
        "generate",
        help="render images from a generator for a list of seeds",
        description="Load a generator, render one image per seed, and write PNGs plus a grid.",
    )
    generate.add_argument("--generator", required=True, help="generator checkpoint path")
    generate.add_argument(
        "--seeds", default="0-7", help="seeds as a list and ranges, e.g. 0-7 or 1,5,9-12"
    )
    generate.add_argument("--out", required=True, help="output folder (created if missing)")
    generate.add_argument(
        "--truncation-psi", type=float, default=1.0, help="truncation towards w_avg (1 = none)"
    )
    generate.add_argument(
        "--noise-mode",
        choices=["const", "random", "none"],
        default="const",
        help="noise inputs of the synthesis network",
    )
    generate.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    generate.set_defaults(handler=_run_generate)


def _run_convert(args: argparse.Namespace) -> int:
    from harness.generator import convert_checkpoint

    convert_checkpoint(args.src, args.dst, overwrite=args.force)
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from harness.generator.render import generate_images, parse_seeds

    generate_images(
        generator_path=args.generator,
        seeds=parse_seeds(args.seeds),
        out_dir=args.out,
        truncation_psi=args.truncation_psi,
        noise_mode=args.noise_mode,
        device=args.device,
    )
    return 0


def _add_suite_commands(commands: argparse._SubParsersAction) -> None:
    suite = commands.add_parser(
        "suite", help="work with suite files", description="Work with suite files."
    )
    suite_commands = suite.add_subparsers(
        dest="suite_command", metavar="SUITE_COMMAND", required=True
    )
    check = suite_commands.add_parser(
        "check",
        help="validate a suite file without loading any model",
        description="Validate a suite file, check that its generator and identity paths exist, "
        "and print the resolved settings and each class's expectations. Loads no model. "
        "Exit code 0 if the suite is valid, 2 if not.",
    )
    check.add_argument("file", help="suite YAML file")
    check.set_defaults(handler=_run_suite_check)


def _run_suite_check(args: argparse.Namespace) -> int:
    from harness.suite import load_suite
    from harness.suite.summary import format_summary

    print("\n".join(format_summary(load_suite(args.file))))
    return 0


def _add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="evaluate a registered classifier version against a suite",
        description="Search one latent direction per class, measure what else changes, apply "
        "the suite's expectations, log everything to MLflow and tag the model version with the "
        "verdict. Exit code: 0 pass, 1 fail, 2 error or bad input.",
    )
    run.add_argument(
        "--model",
        required=True,
        help="registered model version: NAME:VERSION, NAME@ALIAS, models:/NAME/VERSION or "
        "models:/NAME@ALIAS",
    )
    run.add_argument("--suite", default="suites/hair.yaml", help="suite file (YAML)")
    run.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking and registry URI (default: MLFLOW_TRACKING_URI, else MLflow's "
        "default sqlite:///mlflow.db in the working folder)",
    )
    run.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.set_defaults(handler=_run_evaluation)


def _run_evaluation(args: argparse.Namespace) -> int:
    from harness.evaluation import evaluate

    result = evaluate(
        args.model,
        args.suite,
        tracking_uri=args.tracking_uri,
        device=args.device,
        progress=not args.no_progress,
    )
    print("\n".join(result.report))
    print(f"MLflow run: {result.run_id}")
    return result.exit_code


def _add_demo_commands(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="set up or rebuild the embedded demo world",
        description="The demo world: a synthetic avatar generator, identity model and hairstyle "
        "classifiers with planted shortcuts, committed under weights/demo.",
    )
    actions = demo.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    setup = actions.add_parser(
        "setup",
        help="register the demo classifiers as versions 1-3 of model 'hair'",
        description="Register the committed demo classifiers as versions 1, 2, 3 of the "
        "registered model 'hair' and set alias 'champion' on version 1. Running it again "
        "changes nothing.",
    )
    setup.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking and registry URI (default: MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the working folder)",
    )
    setup.set_defaults(handler=_run_demo_setup)

    train = actions.add_parser(
        "train",
        help="retrain demo weights and record them in weights/demo/MANIFEST.json",
        description="Train a demo component from a seed on renders, evaluate it, save it and "
        "record its checksum, command and figures in the manifest. Takes minutes (classifiers) "
        "to about two hours (generator) on a 2-core CPU.",
    )
    train.add_argument("component", choices=["classifiers", "generator", "identity", "all"])
    train.add_argument("--seed", type=int, default=0, help="training seed")
    train.add_argument(
        "--steps", type=int, default=None, help="optimiser steps (default: each trainer's own)"
    )
    train.add_argument("--out", default=None, help="weights folder (default: weights/demo)")
    train.add_argument(
        "--start",
        default=None,
        metavar="CHECKPOINT",
        help="generator only: run just the last training phase (hair) on this checkpoint, "
        "which has been through the first four",
    )
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.set_defaults(handler=_run_demo_train)


def _run_demo_setup(args: argparse.Namespace) -> int:
    from harness.demo.registry import setup_demo_registry

    actions = setup_demo_registry(args.tracking_uri)
    if actions:
        for action in actions:
            print(action)
    else:
        print("demo registry already set up; nothing changed")
    return 0


def _run_demo_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.demo.build import train_component
    from harness.demo.manifest import WEIGHTS_DIR

    out = Path(args.out) if args.out else WEIGHTS_DIR
    start = Path(args.start) if args.start else None
    figures = train_component(
        args.component,
        out=out,
        steps=args.steps,
        seed=args.seed,
        progress=not args.no_progress,
        start=start,
    )
    for name, values in figures.items():
        print(f"{name}:")
        for key, value in values.items():
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


def _add_gate_commands(commands: argparse._SubParsersAction) -> None:
    gate = commands.add_parser(
        "gate",
        help="evaluate model versions automatically when the MLflow registry changes",
        description="The automatic gate: run the main job when a model version is created or "
        "an alias or tag is set, tag the version with the verdict, and move a protected alias "
        "back from a version that does not pass. gate.yaml names the models, suites and "
        "triggers.",
    )
    actions = gate.add_subparsers(dest="gate_command", metavar="ACTION", required=True)

    serve = actions.add_parser(
        "serve",
        help="receive MLflow webhook deliveries and run the jobs they trigger",
        description="Listen for MLflow webhook deliveries (default http://127.0.0.1:8765/webhook), "
        "verify their signature with the secret in LATENTGATE_WEBHOOK_SECRET, queue the "
        "evaluations they trigger in SQLite and run them one at a time. Stops on SIGTERM or "
        "Ctrl+C after the running job.",
    )
    serve.add_argument("--config", required=True, help="gate file (YAML)")
    serve.set_defaults(handler=_run_gate_serve)

    watch = actions.add_parser(
        "watch",
        help="poll the registry for changes instead of receiving webhooks",
        description="Poll the registry for new versions and alias, tag and stage changes, for "
        "stores and hosted services that send no webhooks. Uses the same queue and write-back "
        "as `gate serve`; run one of the two per queue file.",
    )
    watch.add_argument("--config", required=True, help="gate file (YAML)")
    watch.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between polls (default: watch.interval_s in the gate file, 30)",
    )
    watch.add_argument(
        "--once", action="store_true", help="poll once, run the queued jobs, then exit"
    )
    watch.set_defaults(handler=_run_gate_watch)

    install = actions.add_parser(
        "install",
        help="create the webhook on an MLflow server and send it a test delivery",
        description="Create the webhook with MlflowClient.create_webhook (or update the one of "
        "the same name), then send MLflow's test delivery and print the response. The MLflow "
        "server must allow http and loopback URLs for a receiver on the same machine; see "
        "README.md, 'Automatic gate on registry events'.",
    )
    install.add_argument(
        "--tracking-uri",
        default=None,
        help="URL of the MLflow tracking server (default: MLFLOW_TRACKING_URI)",
    )
    install.add_argument(
        "--url", required=True, help="receiver URL, e.g. http://127.0.0.1:8765/webhook"
    )
    install.add_argument(
        "--events",
        nargs="+",
        default=None,
        metavar="EVENT",
        help="webhook events (default: model_version.created model_version_alias.created "
        "model_version_alias.deleted model_version_tag.set)",
    )
    install.add_argument("--name", default="latentgate", help="webhook name (default: latentgate)")
    install.add_argument(
        "--secret-env",
        default="LATENTGATE_WEBHOOK_SECRET",
        help="environment variable that contains the shared secret (default: "
        "LATENTGATE_WEBHOOK_SECRET)",
    )
    install.set_defaults(handler=_run_gate_install)

    uninstall = actions.add_parser(
        "uninstall",
        help="delete the gate's webhook from an MLflow server",
        description="Delete the webhook that `gate install` created, so that the MLflow server "
        "stops sending deliveries to the receiver. Nothing else changes: the verdict tags on "
        "model versions and the gate's queue stay.",
    )
    uninstall.add_argument(
        "--tracking-uri",
        default=None,
        help="URL of the MLflow tracking server (default: MLFLOW_TRACKING_URI)",
    )
    uninstall.add_argument("--name", default="latentgate", help="webhook name (default: latentgate)")
    uninstall.set_defaults(handler=_run_gate_uninstall)

    jobs = actions.add_parser(
        "jobs",
        help="list the gate's recent jobs",
        description="Print the newest jobs of the gate's queue: state, model version, verdict, "
        "run and triggers.",
    )
    jobs.add_argument("--config", required=True, help="gate file (YAML)")
    jobs.add_argument(
        "--limit", type=_positive_int, default=20, help="how many jobs to list (default: 20)"
    )
    jobs.set_defaults(handler=_run_gate_jobs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _run_gate_serve(args: argparse.Namespace) -> int:
    from registry_hooks.config import load_gate_config
    from registry_hooks.service import serve

    serve(load_gate_config(args.config))
    return 0


def _run_gate_watch(args: argparse.Namespace) -> int:
    from registry_hooks.config import load_gate_config
    from registry_hooks.watch import watch

    watch(load_gate_config(args.config), interval_s=args.interval, once=args.once)
    return 0


def _run_gate_install(args: argparse.Namespace) -> int:
    import mlflow

    from registry_hooks.install import install_webhook

    result = install_webhook(
        args.tracking_uri or mlflow.get_tracking_uri(),
        args.url,
        events=args.events,
        name=args.name,
        secret_env=args.secret_env,
    )
    action = "created" if result.created else "updated"
    print(f"{action} webhook {result.name!r} ({result.webhook_id}) -> {result.url}")
    print(f"events: {', '.join(result.events)}")
    print(f"test delivery ({result.test_event}): HTTP {result.test_status} {result.test_body or ''}")
    return 0


def _run_gate_uninstall(args: argparse.Namespace) -> int:
    import mlflow

    from registry_hooks.install import uninstall_webhook

    tracking_uri = args.tracking_uri or mlflow.get_tracking_uri()
    webhook_id = uninstall_webhook(tracking_uri, name=args.name)
    if webhook_id is None:
        print(f"no webhook named {args.name!r} on {tracking_uri}; nothing to delete")
    else:
        print(f"deleted webhook {args.name!r} ({webhook_id}) from {tracking_uri}")
    return 0


def _run_gate_jobs(args: argparse.Namespace) -> int:
    from registry_hooks.config import load_gate_config
    from registry_hooks.queue import JobQueue, format_jobs

    queue = JobQueue(load_gate_config(args.config).queue_path)
    print("\n".join(format_jobs(queue.jobs(args.limit))) or f"no jobs in {queue.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except LatentGateError as error:
        print(f"latentgate: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
