"""``adacs`` subcommands that talk to a running server: submit, wait, download, cancel, train-remote,
datasets and models.

Each takes ``--server`` (default ``$ADACS_SERVER``, else http://127.0.0.1:8000) and ``--api-key``
(default ``$ADACS_API_KEY``). Ids go to stdout and progress bars and summaries to stderr, so
``JOB=$(adacs submit ...)`` captures only the id. ``--json`` prints the server's answer instead.
Exit codes: 0 done; 1 the server refused or the job failed or was cancelled; 2 bad usage or a missing
local file (as for the local commands); 3 the server is unreachable; 4 gave up waiting (``--timeout``);
130 interrupted (the job goes on running on the server).

httpx, tqdm and :mod:`service.client` are imported inside the commands, so ``adacs --help`` stays instant.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.cli_args import LABELS_HELP, arch_option, label_names_arg, label_weight_arg, labels_arg

__all__ = ["add_remote_commands", "REMOTE_COMMANDS"]

EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_INTERRUPTED = 1, 3, 4, 130
OUTPUTS = ("displacement", "inverse-displacement", "jacobian", "warped-image", "warped-mask", "warped-mask-seg",
           "report", "preview.png")  # service.client.DOWNLOADS


# Training hyperparameters the CLI can set: (name in the request body, type). Unset ones are not sent,
# so the server's defaults apply.
HYPERPARAMETERS: tuple[tuple[str, Callable[[str], Any]], ...] = (
    ("epochs", int), ("warmup_epochs", int), ("steps_per_epoch", int), ("batch_size", int),
    ("micro_batch_size", int), ("lr", float), ("scoring_lr", float), ("lam", float), ("alpha", float),
    ("beta", float), ("kappa", float), ("seed", int), ("beta_nll", float), ("adareg_sigma", float),
    ("adaframe_a", float), ("adaframe_b", float), ("auxiliary_lr", float), ("supervision", str),
    ("label_weight", label_weight_arg), ("labels", labels_arg))


# -- shared helpers ------------------------------------------------------------------------------------

def _connection() -> argparse.ArgumentParser:
    """The options every remote command has, as an argparse parent."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--server", help="server URL (default: $ADACS_SERVER or http://127.0.0.1:8000)")
    options.add_argument("--api-key", help="API key, when the server requires one (default: $ADACS_API_KEY)")
    options.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return options


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"adacs {args.command}: error: {message}", file=sys.stderr)
    return code


def _remote(command: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``command(client, args)`` with a client for ``--server``, turning the ways a remote call
    fails into one line on stderr and an exit code."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        import httpx

        from service.client import DEFAULT_SERVER, AdacsApiError, AdacsClient, DownloadError

        server = args.server or os.environ.get("ADACS_SERVER") or DEFAULT_SERVER
        api_key = args.api_key or os.environ.get("ADACS_API_KEY") or None
        try:
            with AdacsClient(server, api_key=api_key) as client:
                return command(client, args)
        except (AdacsApiError, DownloadError) as error:
            return _fail(args, str(error), EXIT_REFUSED)
        except httpx.TransportError as error:
            return _fail(args, f"cannot talk to the server at {server} ({type(error).__name__}: {error}); is it "
                               "running? (adacs serve, or --server / $ADACS_SERVER)", EXIT_UNREACHABLE)
        except TimeoutError as error:
            return _fail(args, f"{error}; it goes on on the server", EXIT_TIMEOUT)
        except KeyboardInterrupt:
            return _fail(args, "interrupted; the job goes on on the server", EXIT_INTERRUPTED)

    return run


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    print("\t".join(columns))
    for row in rows:
        print("\t".join("" if row.get(c) is None else str(row.get(c)) for c in columns))


class JobBar:
    """A tqdm bar on stderr fed with job dicts, as ``on_progress``: registrations count
    ``step``/``steps`` of their phases, trainings ``global_step``/``total_steps`` of their updates."""

    def __init__(self, count: str, total: str, unit: str) -> None:
        self.count, self.total, self.unit = count, total, unit
        self.bar = None

    def __call__(self, job: dict[str, Any]) -> None:
        from tqdm import tqdm

        progress = job.get("progress") or {}
        if self.bar is None:
            self.bar = tqdm(total=progress.get(self.total), unit=self.unit, dynamic_ncols=True, file=sys.stderr)
        if progress.get(self.total):
            self.bar.total = progress[self.total]
        if progress.get(self.count) is not None:
            self.bar.n = progress[self.count]
        if job["status"] == "succeeded" and self.bar.total:
            self.bar.n = self.bar.total
        self.bar.set_description(" ".join(str(p) for p in (job["status"], progress.get("phase")) if p), refresh=False)
        postfix = {"m_t": progress.get("m_t"), "val_dice": progress.get("val_dice")}
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items() if isinstance(v, (int, float))}, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _follow(wait: Callable[..., dict[str, Any]], job_id: str, bar: JobBar, timeout: float | None) -> dict[str, Any]:
    try:
        return wait(job_id, timeout=timeout, on_progress=bar)
    finally:
        bar.close()


def _finish_registration(client, job: dict[str, Any], args: argparse.Namespace) -> int:
    """Report a finished registration; download its outputs into ``--out`` if it succeeded."""
    if args.json:
        _print_json(job)
    if job["status"] != "succeeded":
        return _fail(args, f"registration {job['id']} {job['status']}: {job.get('error') or 'no error recorded'}",
                     EXIT_REFUSED)
    if getattr(args, "out", None) is not None:
        for path in client.download_all(job["id"], args.out).values():
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _finish_training(job: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        _print_json(job)
    if job["status"] != "succeeded":
        return _fail(args, f"training job {job['id']} {job['status']}: {job.get('error') or 'no error recorded'}",
                     EXIT_REFUSED)
    print(f"training job {job['id']} succeeded: model {job.get('model_version')}", file=sys.stderr)
    return 0


def _wait_registration(client, job_id: str, args: argparse.Namespace) -> int:
    job = _follow(client.wait_registration, job_id, JobBar("step", "steps", "phase"), args.timeout)
    return _finish_registration(client, job, args)


def _wait_training(client, job_id: str, args: argparse.Namespace) -> int:
    return _finish_training(_follow(client.wait_training, job_id, JobBar("global_step", "total_steps", "upd"),
                                    args.timeout), args)


def _queued(client, job: dict[str, Any], args: argparse.Namespace, wait: bool,
            follow: Callable[[Any, str, argparse.Namespace], int]) -> int:
    """A job the server just queued: its id on stdout (before any wait, so an interrupted wait still
    leaves it known), then either its JSON, or ``follow`` it to the end (``--wait``)."""
    if not args.json:
        print(job["id"], flush=True)
    if not wait:
        if args.json:
            _print_json(job)
        return 0
    return follow(client, job["id"], args)


# -- the commands ----------------------------------------------------------------------------------------

@_remote
def cmd_submit(client, args: argparse.Namespace) -> int:
    job = client.register(args.fixed, args.moving, args.moving_mask, args.fixed_mask, model=args.model,
                          fixed_series=args.fixed_series, moving_series=args.moving_series,
                          fixed_frame=args.fixed_frame, moving_frame=args.moving_frame, labels=args.labels)
    return _queued(client, job, args, bool(args.wait or args.out), _wait_registration)


@_remote
def cmd_wait(client, args: argparse.Namespace) -> int:
    from service.client import AdacsApiError

    try:
        client.get_registration(args.job_id)
    except AdacsApiError as missing:
        if missing.status_code != 404:
            raise
        try:
            client.get_training_job(args.job_id)
        except AdacsApiError as also_missing:
            if also_missing.status_code != 404:
                raise
            raise AdacsApiError(404, "not_found", f"no registration or training job with id {args.job_id!r}") \
                from None
        return _wait_training(client, args.job_id, args)
    return _wait_registration(client, args.job_id, args)


@_remote
def cmd_download(client, args: argparse.Namespace) -> int:
    if args.what:
        paths = [client.download(args.job_id, what, _folder(args.out)) for what in args.what]
    else:
        paths = list(client.download_all(args.job_id, args.out).values())
    for path in paths:
        print(path)
    return 0


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@_remote
def cmd_cancel(client, args: argparse.Namespace) -> int:
    job = client.cancel_training_job(args.job_id)
    if args.json:
        _print_json(job)
    else:
        print(f"training job {job['id']}: cancel requested (status {job['status']})", file=sys.stderr)
    return 0


@_remote
def cmd_train_remote(client, args: argparse.Namespace) -> int:
    hyperparameters = {name: getattr(args, name) for name, _ in HYPERPARAMETERS if getattr(args, name) is not None}
    if args.no_bidir:
        hyperparameters["bidir"] = False
    if args.crop is not None:
        hyperparameters["crop"] = args.crop
    job = client.train(args.dataset, args.model_name, architecture=args.arch, method=args.method,
                       hyperparameters=hyperparameters or None, val_fraction=args.val_fraction,
                       architecture_options=dict(args.arch_options) or None, devices=args.devices)
    return _queued(client, job, args, args.wait, _wait_training)


@_remote
def cmd_datasets(client, args: argparse.Namespace) -> int:
    if args.action == "upload":
        dataset = client.upload_dataset(args.zip, name=args.name, layout=args.layout)
        if args.json:
            _print_json(dataset)
        else:
            print(dataset["id"])
            print(f"dataset {dataset.get('name')!r}: {dataset.get('layout')}, {dataset.get('n_pairs')} pairs, "
                  f"{dataset.get('status')}", file=sys.stderr)
    elif args.action == "list":
        page = client.list_datasets()
        if args.json:
            _print_json(page)
        else:
            _print_table(page["data"], ("id", "name", "layout", "status", "n_pairs", "n_subjects", "ndim"))
    else:
        client.delete_dataset(args.dataset_id)
    return 0


@_remote
def cmd_models(client, args: argparse.Namespace) -> int:
    if args.action == "list":
        page = client.list_models()
        rows = [{**m, "stages": ",".join(f"{s}={v}" for s, v in sorted(m["stages"].items()))} for m in page["data"]]
        if args.json:
            _print_json(page)
        else:
            _print_table(rows, ("name", "latest_version", "stages"))
    elif args.action == "upload":
        version = client.upload_model(args.name, args.artifact)
        print(json.dumps(version, indent=2) if args.json else version["ref"])
    else:
        assignment = client.promote(args.name, args.version, args.stage)
        print(json.dumps(assignment, indent=2) if args.json else
              f"{assignment['model']}@{assignment['stage']} -> {assignment['model']}:{assignment['version']}")
    return 0


REMOTE_COMMANDS = {"submit": cmd_submit, "wait": cmd_wait, "download": cmd_download, "cancel": cmd_cancel,
                   "train-remote": cmd_train_remote, "datasets": cmd_datasets, "models": cmd_models}


# -- the parsers ---------------------------------------------------------------------------------------------

def _add_submit(sub, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("submit", parents=[common], help="upload an image pair to a server and queue its registration")
    s.add_argument("--fixed", required=True, type=Path, help="fixed image (file, or a DICOM folder or zip)")
    s.add_argument("--moving", required=True, type=Path, help="moving image")
    s.add_argument("--moving-mask", type=Path, help="label map on the moving image, warped to the fixed grid")
    s.add_argument("--fixed-mask", type=Path, help="label map on the fixed image (Dice goes into the report)")
    s.add_argument("--model", help="'name', 'name:3' or 'name@stage' (default: the server's default model)")
    for role in ("fixed", "moving"):
        s.add_argument(f"--{role}-series", help=f"SeriesInstanceUID (or a unique prefix) of the {role} DICOM series")
        s.add_argument(f"--{role}-frame", type=int, help=f"frame (0-based) of a 4D {role} image")
    s.add_argument("--labels", type=label_names_arg, help=LABELS_HELP)
    s.add_argument("--wait", action="store_true", help="wait with a progress bar until the job has finished")
    s.add_argument("--out", type=Path, help="download every output into this folder (implies --wait)")
    s.add_argument("--timeout", type=float, help="seconds to wait at most (default: no limit)")


def _add_jobs(sub, common: argparse.ArgumentParser) -> None:
    w = sub.add_parser("wait", parents=[common], help="wait with a progress bar for a registration or training job")
    w.add_argument("job_id")
    w.add_argument("--out", type=Path, help="download a registration's outputs into this folder")
    w.add_argument("--timeout", type=float, help="seconds to wait at most (default: no limit)")
    d = sub.add_parser("download", parents=[common], help="download a finished registration's outputs")
    d.add_argument("job_id")
    d.add_argument("--out", required=True, type=Path, help="folder to write into")
    d.add_argument("--what", nargs="+", choices=OUTPUTS, help="outputs to fetch (default: every one it has)")
    c = sub.add_parser("cancel", parents=[common], help="ask a server to cancel a training job")
    c.add_argument("job_id")


def _add_train_remote(sub, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser("train-remote", parents=[common], help="queue a training on a server, on an uploaded dataset")
    t.add_argument("--dataset", required=True, help="dataset id (adacs datasets upload / list)")
    t.add_argument("--model-name", required=True, help="model to register the result as (a new version)")
    t.add_argument("--arch", help="pyramid, voxelmorph, transmorph or diffusemorph (default: the server's)")
    t.add_argument("--arch-option", dest="arch_options", type=arch_option, action="append", default=[],
                   metavar="KEY=VALUE", help="an architecture size (JSON value; repeatable), e.g. embed_dim=48")
    t.add_argument("--method", help="none (vanilla), adacs, nll, beta-nll, adareg, adaframe, adacs-scs-only or "
                                     "adacs-no-tv (default: the server's)")
    t.add_argument("--val-fraction", type=float, help="share of subjects held out for validation")
    t.add_argument("--devices", type=int, help="processes to train with, one per GPU of the worker's machine "
                                               "(1 to 8; batch size a multiple) (default: 1)")
    for name, kind in HYPERPARAMETERS:
        t.add_argument(f"--{name.replace('_', '-')}", type=kind, help="(default: the server's)")
    t.add_argument("--no-bidir", action="store_true", help="train one direction only")
    t.add_argument("--crop", type=int, help="side of the training crops (acdc, manifest) or grid (camus)")
    t.add_argument("--wait", action="store_true", help="follow the training with a progress bar until it ends")
    t.add_argument("--timeout", type=float, help="seconds to wait at most (default: no limit)")


def _add_groups(sub, common: argparse.ArgumentParser) -> None:
    ds = sub.add_parser("datasets", help="datasets on a server").add_subparsers(dest="action", required=True)
    u = ds.add_parser("upload", parents=[common], help="upload a dataset zip (ACDC, CAMUS or a manifest)")
    u.add_argument("zip", type=Path)
    u.add_argument("--name", help="a name to find it by")
    u.add_argument("--layout", choices=("acdc", "camus", "manifest"), help="default: detected from the zip")
    ds.add_parser("list", parents=[common], help="list the server's datasets")
    rm = ds.add_parser("delete", parents=[common], help="delete a dataset")
    rm.add_argument("dataset_id")

    ms = sub.add_parser("models", help="the model registry on a server").add_subparsers(dest="action", required=True)
    ms.add_parser("list", parents=[common], help="list models, their latest versions and stage labels")
    up = ms.add_parser("upload", parents=[common], help="upload a model artifact (zip or folder) as a new version")
    up.add_argument("name")
    up.add_argument("artifact", type=Path)
    p = ms.add_parser("promote", parents=[common], help="point a stage label at a model version")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--stage", default="production")


def add_remote_commands(sub: argparse._SubParsersAction) -> None:
    """Add the remote subcommands to ``adacs``'s subparsers; :data:`REMOTE_COMMANDS` runs them."""
    common = _connection()
    _add_submit(sub, common)
    _add_jobs(sub, common)
    _add_train_remote(sub, common)
    _add_groups(sub, common)
