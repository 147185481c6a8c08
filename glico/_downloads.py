"""Fetching pretrained backbone weights through torch's hub cache, with errors that say how to fix them."""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import torch

# A stalled connection (a firewall that drops packets) must not hang the constructor for minutes. The
# timeout bounds each socket operation, not the whole transfer, so a slow but live download still finishes.
DOWNLOAD_SOCKET_TIMEOUT_S = 20.0
# Exceptions that mean "the pretrained file could not be had": no network (URLError), HTTP errors, a hash
# mismatch (RuntimeError), and a truncated or corrupt cached file, for which torch.load raises almost anything
# (UnpicklingError, EOFError, even IndexError). So this is deliberately every Exception; callers wrap it in an
# actionable error that quotes and chains the cause, so nothing is hidden. Also used by glico.classifiers.
FETCH_ERRORS: tuple[type[BaseException], ...] = (Exception,)


def hub_cache_path(url: str) -> str:
    """Where ``torch.hub.load_state_dict_from_url`` stores (and first looks for) the file at ``url``.

    Args:
        url: the download address of a checkpoint.

    Returns:
        ``<torch.hub.get_dir()>/checkpoints/<file name of url>``.
    """
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


@contextlib.contextmanager
def bounded_socket_timeout(seconds: float = DOWNLOAD_SOCKET_TIMEOUT_S) -> Iterator[None]:
    """Give new sockets a timeout while the block runs, unless the program already chose one.

    ``torch.hub`` opens its connection without a timeout; this keeps an unreachable host from blocking
    for minutes. The previous default is restored afterwards.
    """
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        if previous is None:
            socket.setdefaulttimeout(None)


def missing_weights_message(what: str, url: str, cause: BaseException, alternatives: str) -> str:
    """An actionable message for pretrained weights that could not be downloaded or read.

    Args:
        what: what was being loaded, e.g. "ImageNet VGG-16 weights (VGG16_Weights.IMAGENET1K_V1)".
        url: the address torchvision downloads them from.
        cause: the exception that was raised.
        alternatives: the user's other options, one sentence each, already formatted.

    Returns:
        The message.
    """
    path = hub_cache_path(url)
    state = "exists but could not be read (delete or replace it)" if os.path.exists(path) else "does not exist"
    return (
        f"Could not load the {what}: {type(cause).__name__}: {cause}\n"
        f"torchvision looks for them in {path} (that file {state}) and otherwise downloads {url} there.\n"
        f"To fix this, either:\n"
        f"  - on a machine with internet access, download {url} and copy it to {path} "
        f"(the cache root is torch.hub.get_dir(); set TORCH_HOME to move it), or\n"
        f"{alternatives}"
    )


def fetch_weights_enum(weights, what: str, alternatives: str) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum (from torch's hub cache, else downloaded), or a
    RuntimeError that says where the file goes and what else to pass.

    Args:
        weights: a ``torchvision.models.WeightsEnum`` member.
        what: what is being loaded, for the message.
        alternatives: the user's other options, formatted as in :func:`missing_weights_message`.
    """
    try:
        with bounded_socket_timeout():
            return weights.get_state_dict(progress=False, check_hash=True)
    except FETCH_ERRORS as err:
        raise RuntimeError(missing_weights_message(what, weights.url, err, alternatives)) from err
