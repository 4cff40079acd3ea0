"""Argument types of the ``adacs`` command line, shared by the local and the remote subcommands.

Each turns one flag's text into a value or raises ``argparse.ArgumentTypeError``, so a bad value is a
usage error (exit 2, the flag named) before any work starts. The rules themselves live in
:mod:`models.defaults`, where the trainer and the API apply them too. Imports nothing heavy, so
``adacs --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json

from models.defaults import check_label_weight, check_labels

__all__ = ["arch_option", "ints_arg", "label_weight_arg", "labels_arg", "refine_steps_arg", "seconds_arg"]


def ints_arg(text: str) -> tuple[int, ...]:
    """``16,32,32``: comma-separated integers (network feature counts)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def label_weight_arg(text: str) -> float:
    """``--label-weight``: a finite number > 0, refused as a usage error (the rule of ``models.defaults``)."""
    try:
        weight = float(text)
        check_label_weight(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--label-weight must be a finite number > 0, got {text!r}") from None
    return weight


def labels_arg(text: str) -> tuple[int, ...]:
    """``--labels 1,2,3``: distinct foreground labels, refused as a usage error (0 is the background)."""
    try:
        labels = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer labels, got {text!r}") from None
    try:
        check_labels(labels)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return labels


def arch_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with a JSON value (``depths=[2,2,4]``, ``embed_dim=48``); a bare word stays a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def refine_steps_arg(text: str) -> int:
    """``--refine-steps``: an integer >= 0 (0: the network's answer, unrefined)."""
    try:
        steps = int(text)
    except ValueError:
        steps = -1
    if steps < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return steps


def seconds_arg(text: str) -> float:
    """``--refine-time-limit``: a finite number of seconds > 0 (NaN and infinity are refused too)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds > 0, got {text!r}")
    return seconds


LABELS_HELP = ('names of the mask\'s labels in the report, as JSON: \'{"1": "RV", "2": "myocardium", "3": "LV"}\' '
               "(default: the model card's, else 'label k')")


def label_names_arg(text: str) -> dict[str, str]:
    """``--labels '{"1": "RV", "2": "myocardium"}'``: the names the report gives the mask's labels."""
    from models.report import parse_label_names  # numpy only when the flag is used

    try:
        return parse_label_names(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def device_name(name: str) -> str:
    """``--device``: ``auto`` is CUDA when there is one, else the CPU; anything else as given."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
