"""Checks of the arguments the scripts share, run as soon as the command line is parsed.

``check_after_parsing(parser)`` makes ``parser.parse_args`` check every argument of ``RULES``
that the parser has (``--seed``, ``--epoch``, ``--batch-size``, ``--device``, ...; and that no
file is where ``--run-dir`` or ``--logdir`` needs a directory): a bad value raises
``UserInputError`` with one line that names the user's flag and the allowed values, before any
work (``add_training_args`` installs it on every offline script's parser).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from tianshou_offline.errors import UserInputError
from tianshou_offline.files import check_directory

SEED_LIMIT = 2**32  # numpy's seeds are 0 ... 2**32 - 1


def _positive(value: Any) -> bool:
    return value >= 1


def _seed(value: Any) -> bool:
    return 0 <= value < SEED_LIMIT


# dest -> (whether a value is allowed, what is allowed); a list (nargs) is checked item by item
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (_seed, f"a seed from 0 to {SEED_LIMIT - 1}"),
    "epoch": (_positive, "a number of epochs of 1 or more"),
    "epoch_num_steps": (_positive, "a number of steps of 1 or more"),
    "batch_size": (_positive, "a batch size of 1 or more"),
    "test_num": (_positive, "a number of evaluation episodes of 1 or more"),
    "hidden_sizes": (_positive, "layer widths of 1 or more, e.g. 256 256"),
    "vae_hidden_sizes": (_positive, "layer widths of 1 or more, e.g. 750 750"),
    "buffer_size_limit": (_positive, "a number of transitions of 1 or more"),
    "buffer_size": (_positive, "a buffer size of 1 or more"),
    "training_num": (_positive, "a number of training environments of 1 or more"),
    "max_episode_steps": (_positive, "a number of steps of 1 or more (or leave it out)"),
    "n_step": (_positive, "a return horizon of 1 or more"),
    "num_quantiles": (_positive, "a number of quantiles of 1 or more"),
    "num_repeat_actions": (_positive, "a number of sampled actions of 1 or more"),
    "update_actor_freq": (_positive, "an actor update period of 1 or more"),
    "latent_dim": (_positive, "a latent size of 1 or more (or leave it out)"),
}


# output directories: refused when a file is in the way (nothing is created here)
DIRECTORIES = ("run_dir", "logdir")


def check_device(text: str, flag: str = "--device") -> str:
    """``text`` if torch can run on it here: cpu, or cuda / cuda:<index> with a CUDA device."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise UserInputError(
            f"{flag} {text}: not a device; use cpu, cuda or cuda:<index>"
        ) from None
    if device.type == "cpu":
        return text
    if device.type != "cuda":
        raise UserInputError(f"{flag} {text}: these scripts run on cpu or cuda (cuda:<index>)")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserInputError(f"{flag} {text}: this machine has no CUDA device; use {flag} cpu")
    if device.index is not None and device.index >= count:
        raise UserInputError(
            f"{flag} {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )
    return text


def check_args(args: argparse.Namespace, flags: dict[str, str] | None = None) -> None:
    """Raise ``UserInputError`` for the first argument in ``RULES`` (or ``--device``) whose value
    is not allowed. ``flags``: dest -> the option string to name (default ``--<dest>``)."""
    flags = flags or {}
    for dest, (allowed, description) in RULES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        if not all(isinstance(v, int) and allowed(v) for v in values):
            flag = flags.get(dest, "--" + dest.replace("_", "-"))
            shown = " ".join(map(str, values))
            raise UserInputError(f"{flag} {shown}: expected {description}")
    device = getattr(args, "device", None)
    if isinstance(device, str):
        check_device(device, flags.get("device", "--device"))
    for dest in DIRECTORIES:  # a file in the way: now, not after loading the data
        folder = getattr(args, dest, None)
        if isinstance(folder, str):
            check_directory(folder, flags.get(dest, "--" + dest.replace("_", "-")))


def check_after_parsing(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` run ``check_args`` on what it parses (also as a subcommand's parser).
    Installing it twice checks once."""
    if getattr(parser, "_checks_arguments", False):
        return
    parse_known_args = parser.parse_known_args

    def parse_and_check(args=None, namespace=None):
        namespace, extras = parse_known_args(args, namespace)
        flags = {
            action.dest: next(o for o in action.option_strings if o.startswith("--"))
            for action in parser._actions
            if any(o.startswith("--") for o in action.option_strings)
        }
        check_args(namespace, flags)
        return namespace, extras

    parser.parse_known_args = parse_and_check  # type: ignore[method-assign]
    parser._checks_arguments = True  # type: ignore[attr-defined]
