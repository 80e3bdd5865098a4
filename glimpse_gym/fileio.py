"""Files the project writes and reads: atomic writes, checksums, and loads that run no code.

Every ``.pt`` file of the project (BagNet, Saccader and REINFORCE checkpoints) is a plain
dict of tensors and plain data with a ``"checksum"`` entry: the sha256 of everything else in
it (:func:`payload_checksum`). :func:`save_payload` writes it atomically (a temporary file in
the same folder, then ``os.replace``); :func:`load_payload` reads it with
``torch.load(weights_only=True)``, which builds tensors and plain Python values only and
refuses anything else (a crafted pickle cannot run code), then checks the format and the
checksum, so a damaged or edited file raises :class:`~glimpse_gym.errors.CheckpointError`
naming the file instead of loading other values.

Temporary files and folders carry the writing process's id (``.NAME.tmp-HOST-PID-XXXX``); the
next write beside them removes those whose process is gone (:func:`remove_stale`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from glimpse_gym.errors import CheckpointError

CHECKSUM = "checksum"
ZIP_MAGIC = b"PK\x03\x04"
# how reading a damaged file can fail (zip, deflate, npy, JSON nested too deep, I/O)
READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, RecursionError)


def ordinary_mode(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (mkstemp / mkdtemp use 0600 /
    0700, which would keep a shared bank or checkpoint from its readers)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def temporary_name(path: Path, kind: str = "tmp") -> str:
    """The prefix of a temporary sibling of ``path``: ``.NAME.KIND-HOST-PID-``."""
    return f".{path.name}.{kind}-{_host()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's, or not a pid
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by killed writers of this machine
    (the host name and process id are in the name, and that process no longer runs; another
    machine's writers on a shared folder are left alone); return what was removed."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(tmp|old)-([A-Za-z0-9]+)-(\d+)-")
    removed = []
    if not path.parent.is_dir():
        return removed
    host = _host()
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if not m or m.group(2) != host or _alive(int(m.group(3))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then ``os.replace`` it into
    place: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=temporary_name(path), suffix=".tmp", dir=path.parent)
    ordinary_mode(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON through :func:`atomic_write` (a results file is whole or
    absent)."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def json_checksum(obj: dict[str, Any], exclude: str) -> str:
    """sha256 of ``obj`` without its ``exclude`` entry, as canonical JSON (sorted keys, no
    spaces): the checksum a JSON file carries of itself."""
    body = {k: v for k, v in obj.items() if k != exclude}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def exchange_or_replace(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target``. When ``target`` exists, the two are swapped in
    one step (Linux ``renameat2(RENAME_EXCHANGE)``: a reader sees the old folder or the new
    one, never none) and the old one is then removed. Elsewhere the old folder is moved aside
    first (a short window without a folder at ``target``)."""
    if not target.exists():
        os.rename(new, target)
        return
    if not _rename_exchange(new, target):
        aside = Path(tempfile.mkdtemp(prefix=temporary_name(target, "old"), dir=target.parent))
        os.rename(target, aside / target.name)
        try:
            os.rename(new, target)
        except BaseException:  # put the old folder back before giving up
            os.rename(aside / target.name, target)
            aside.rmdir()
            raise
        new = aside
    shutil.rmtree(new, ignore_errors=True)  # now holds the old folder


def _rename_exchange(a: Path, b: Path) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    # non-zero: e.g. a file system without RENAME_EXCHANGE; the caller falls back
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def state_dict_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """A short sha256 of a model's tensors (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        _feed_tensor(h, key, state_dict[key])
    return h.hexdigest()[:16]


def _feed_tensor(h: Any, key: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _feed(h: Any, value: Any) -> None:
    """Hash a nest of dicts, lists, tuples, tensors and scalars in a fixed order."""
    if isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=repr):
            _feed(h, key)
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[" if isinstance(value, list) else b"(")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(value, torch.Tensor):
        _feed_tensor(h, "", value)
    elif value is None or isinstance(value, (bool, int, float, str, bytes, torch.dtype,
                                              torch.Size, torch.device)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise TypeError(f"cannot checksum a {type(value).__name__}")


def payload_checksum(payload: dict[str, Any]) -> str:
    """sha256 of every entry of ``payload`` but ``"checksum"``."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != CHECKSUM})
    return h.hexdigest()


def save_payload(payload: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Add the checksum to ``payload`` and write it atomically; return it."""
    payload = {k: v for k, v in payload.items() if k != CHECKSUM}
    payload[CHECKSUM] = payload_checksum(payload)
    atomic_torch_save(payload, path)
    return payload


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_file(path: Path) -> str:
    """What a file that is not the expected checkpoint looks like, for error messages."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except READ_ERRORS:
            return "a damaged zip archive"
        if "data" in names and "policy.pth" in names:
            return "a Stable-Baselines3 .zip"
        return "a torch file"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file (results of a run, or metadata), not a checkpoint"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy array"
    return "not a torch checkpoint"


def read_torch(path: str | Path, what: str,
               map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of ``path``; any failure is a
    :class:`CheckpointError` naming the file (a pickle that would build other objects than
    tensors and plain data is refused, not run)."""
    path = Path(path).expanduser()
    if not path.is_file():
        where = "a folder" if path.is_dir() else "no file"
        raise CheckpointError(f"no {what} at {path} ({where} there)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any way a damaged file can fail to load)
        text = str(exc)
        wanted = re.search(r"GLOBAL (\S+)", text)
        if wanted:  # the pickle asks for a function or class: refused, never called
            raise CheckpointError(
                f"{path} is not a {what}: it asks to build {wanted.group(1)}, and glimpse-gym "
                "loads tensors and plain data only (anything else could run code from the "
                "file)") from None
        reason = re.search(r"Unsupported operand \d+|invalid load key[^.\n]*", text)
        first = reason.group(0) if reason else (
            text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
        raise CheckpointError(f"{path} is not a readable {what} ({describe_file(path)}): "
                              f"{first}") from None


def load_payload(path: str | Path, fmt: str, what: str,
                 map_location: str | torch.device = "cpu", *,
                 require_checksum: bool = True) -> dict[str, Any]:
    """Load a file written by :func:`save_payload` with ``"format": fmt``.

    Raises:
        CheckpointError: naming the file, when it is missing, unreadable, of another kind,
            or damaged (its checksum does not match its contents).
    """
    path = Path(path).expanduser()
    payload = read_torch(path, f"{what} checkpoint", map_location)
    return check_payload(payload, path, fmt, what, require_checksum=require_checksum)


def check_payload(payload: Any, path: Path, fmt: str, what: str, *,
                  require_checksum: bool = True) -> dict[str, Any]:
    """The checks of :func:`load_payload` on a payload already read from ``path``."""
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if not isinstance(payload, dict) or found != fmt:
        raise CheckpointError(f"{path} is not a {what} checkpoint (expected format {fmt!r}, "
                              f"found {found!r}{_kind_hint(found)})")
    stored = payload.get(CHECKSUM)
    if stored is None:
        if require_checksum:
            raise CheckpointError(f"{path} has no checksum, so damage to it could not be "
                                  "detected; write it again with this version of glimpse-gym")
    else:
        try:
            actual = payload_checksum(payload)
        except Exception as exc:  # noqa: BLE001  (a value the checksum cannot read)
            raise CheckpointError(f"{path} is damaged: {exc}") from None
        if actual != stored:
            raise CheckpointError(f"{path} is damaged: its contents do not match the checksum "
                                  "stored in it (a changed byte); restore the file or write "
                                  "it again")
    return payload


_KINDS = {"glimpse-gym-bagnet/1": "a BagNet checkpoint (use it with --checkpoint)",
          "glimpse-gym-saccader/1": "a Saccader policy from 'glimpse train saccader'",
          "glimpse-gym-reinforce/1": "a REINFORCE policy from 'glimpse train reinforce'",
          "glimpse-gym-tnet/1": "a TNet from 'glimpse train tnet'",
          "glimpse-gym-multiscale-saccader/1":
              "a Saccader across scales from 'glimpse train multiscale-saccader'"}


def _kind_hint(found: Any) -> str:
    return f": {_KINDS[found]}" if isinstance(found, str) and found in _KINDS else ""
