"""The checks a feature bank passes before anything reads it.

- ``meta.json`` carries ``meta_sha256``, the sha256 of the rest of it (canonical JSON), so an
  edited or damaged field is caught (:func:`meta_checksum`);
- its fields are checked for type and against each other (:func:`check_meta`): positive
  receptive field and stride, ``grid == (image - rf) // stride + 1``, one class name per
  class, every array's dtype and shape from the same N, D, K and grid;
- every file's size is compared with ``meta.json`` at each open (a stat), and its sha256 the
  first time a bank is opened, or with ``verify=True`` every time (:func:`verify_files`). A
  passed full check is recorded in the user cache (:func:`glimpse_gym.cache.cache_dir`) with
  each file's size, modification time and inode, so later opens of the unchanged files skip
  the hashing; a file written since (new modification time) is hashed again.

Every failure is a :class:`~glimpse_gym.errors.BankError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from glimpse_gym.cache import cache_dir
from glimpse_gym.errors import BankError
from glimpse_gym.fileio import atomic_write, file_sha256, json_checksum

FORMAT = "glimpse-gym-bank/1"
FORMAT_SHARDED = "glimpse-gym-bank/2"  # the arrays in parts: meta.json has "shards"
FORMATS = (FORMAT, FORMAT_SHARDED)
LAYOUTS = ("channels-first", "channels-last")
META = "meta.json"
HEAD = "head.npz"
META_CHECKSUM = "meta_sha256"
ARRAY_DTYPES = {"features": ("float16", "float32", "int8"), "logits": ("float32",),
                "labels": ("int64",), "images": ("uint8",)}


def meta_checksum(meta: dict[str, Any]) -> str:
    """sha256 of ``meta`` without its ``meta_sha256`` entry, as canonical JSON."""
    return json_checksum(meta, META_CHECKSUM)


def read_meta(path: Path) -> dict[str, Any]:
    """Parse, checksum and check ``path/meta.json``; return it."""
    meta_path = path / META
    try:
        meta = json.loads(meta_path.read_bytes())
    except FileNotFoundError:
        raise BankError(f"{meta_path} is missing: {path} is not a complete feature bank") \
            from None
    except OSError as exc:
        raise BankError(f"{meta_path} cannot be read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BankError(f"{meta_path} is damaged (not valid JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise BankError(f"{meta_path}: format is {found!r}, expected one of {FORMATS} (a "
                        "bank written by a newer version of glimpse-gym needs that version)")
    stored = meta.get(META_CHECKSUM)
    if stored is None:
        raise BankError(f"{meta_path} has no {META_CHECKSUM}, so changes to it could not be "
                        "detected; write the bank again with 'glimpse extract-features "
                        "--overwrite'")
    if stored != meta_checksum(meta):
        raise BankError(f"{meta_path} is damaged or was edited: its contents do not match its "
                        f"{META_CHECKSUM}; restore it or write the bank again")
    check_meta(meta, meta_path)
    return meta


def _int(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _ints(value: Any, length: int, minimum: int = 1) -> bool:
    return isinstance(value, list) and len(value) == length and all(
        _int(v, minimum) for v in value)


def array_files(spec: dict[str, Any]) -> list[str]:
    """The files of one array of ``meta.json``'s ``arrays``: ``[file]``, or its parts."""
    return list(spec["files"]) if "files" in spec else [spec["file"]]


def _plain_name(name: Any) -> bool:
    return (isinstance(name, str) and bool(name) and name.isprintable() and "/" not in name
            and "\\" not in name and not name.startswith("."))


def check_meta(meta: dict[str, Any], meta_path: Path) -> None:
    """Raise :class:`BankError` listing every field of ``meta`` of the wrong type or value,
    and every pair of fields that disagree."""
    problems: list[str] = []
    sections = {"dataset": dict, "model": dict, "arrays": dict, "checksums": dict,
                "sizes": dict, "normalization": dict}
    for key, kind in sections.items():
        if not isinstance(meta.get(key), kind):
            problems.append(f"{key} is missing or not a {kind.__name__}")
    if problems:
        raise BankError(f"{meta_path} is damaged: " + "; ".join(problems))
    dataset, model = meta["dataset"], meta["model"]
    grid, image_shape = meta.get("grid"), meta.get("image_shape")
    for key, ok in (("grid", _ints(grid, 2)), ("image_shape", _ints(image_shape, 3))):
        if not ok:
            problems.append(f"{key} must be a list of positive integers, not {meta.get(key)!r}")
    for key in ("rf", "stride", "feature_dim", "num_classes"):
        if not _int(model.get(key)):
            problems.append(f"model.{key} must be a positive integer, not {model.get(key)!r}")
    for key in ("arch", "hash"):
        if not isinstance(model.get(key), str):
            problems.append(f"model.{key} must be a string")
    for key in ("name", "split"):
        if not isinstance(dataset.get(key), str):
            problems.append(f"dataset.{key} must be a string")
    n = dataset.get("num_images")
    if not _int(n, 0):
        problems.append(f"dataset.num_images must be an integer >= 0, not {n!r}")
    names = dataset.get("class_names")
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        problems.append("dataset.class_names must be a list of strings")
    elif _int(model.get("num_classes")) and len(names) != model["num_classes"]:
        problems.append(f"{len(names)} class names for model.num_classes "
                        f"{model['num_classes']}")
    if problems:
        raise BankError(f"{meta_path} is damaged: " + "; ".join(problems))
    # ---- fields against each other
    c, hgt, wid = image_shape
    rf, stride = model["rf"], model["stride"]
    expected_grid = [(hgt - rf) // stride + 1, (wid - rf) // stride + 1]
    if grid != expected_grid:
        problems.append(f"grid {grid} does not follow from image_shape {image_shape}, rf {rf} "
                        f"and stride {stride} (expected {expected_grid})")
    norm = meta["normalization"]
    for key in ("mean", "std"):
        values = norm.get(key)
        if not (isinstance(values, list) and len(values) == c and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            problems.append(f"normalization.{key} must be {c} numbers")
        elif key == "std" and min(values) <= 0:
            problems.append("normalization.std must be positive")
    d, k = model["feature_dim"], model["num_classes"]
    shapes = {"features": [n, d, *grid], "logits": [n, k, *grid], "labels": [n],
              "images": [n, c, hgt, wid]}
    arrays = meta["arrays"]
    sharded = meta["format"] == FORMAT_SHARDED
    shards = meta.get("shards")
    if sharded and not (isinstance(shards, list) and shards and all(_int(s) for s in shards)
                        and sum(shards) == n):
        problems.append(f"shards must be a list of positive image counts adding up to "
                        f"dataset.num_images {n}, not {shards!r}")
        shards = None
    elif not sharded and shards is not None:
        problems.append(f"shards is given, but format {FORMAT!r} is a bank in one part")
    for name in sorted(set(ARRAY_DTYPES) - {"images", "logits"} - set(arrays)):
        problems.append(f"arrays.{name} is missing")
    for name, spec in arrays.items():
        if name not in ARRAY_DTYPES:
            problems.append(f"arrays.{name} is not an array of a bank")
            continue
        if not isinstance(spec, dict) or not (
                _plain_name(spec.get("file")) if not sharded else (
                    isinstance(spec.get("files"), list) and shards is not None
                    and len(spec["files"]) == len(shards)
                    and all(_plain_name(f) for f in spec["files"]))):
            problems.append(f"arrays.{name} must name a file inside the bank" if not sharded
                            else f"arrays.{name}.files must name one file inside the bank "
                            "per shard")
            continue
        if spec.get("layout", "channels-first") not in LAYOUTS or (
                "layout" in spec and name not in ("features", "logits")):
            problems.append(f"arrays.{name}.layout {spec.get('layout')!r} is not one of "
                            f"{LAYOUTS} (features and logits only)")
        if spec.get("dtype") not in ARRAY_DTYPES[name]:
            problems.append(f"arrays.{name}.dtype {spec.get('dtype')!r} is not one of "
                            f"{ARRAY_DTYPES[name]}")
        if spec.get("shape") != shapes[name]:
            problems.append(f"arrays.{name}.shape {spec.get('shape')!r} disagrees with the "
                            f"other fields (expected {shapes[name]})")
    files = {f for spec in arrays.values() if isinstance(spec, dict)
             for f in (spec.get("files") if sharded else [spec.get("file")]) or []
             if _plain_name(f)} | {HEAD}
    sums, sizes = meta["checksums"], meta["sizes"]
    for f in sorted(files):
        if not (isinstance(sums.get(f), str) and len(sums[f]) == 64):
            problems.append(f"checksums.{f} is missing or not a sha256")
        if not _int(sizes.get(f), 0):
            problems.append(f"sizes.{f} is missing or not a size")
    extra = sorted((set(sums) | set(sizes)) - files)
    if extra:
        problems.append(f"checksums or sizes name files that are not part of the bank: {extra}")
    if problems:
        raise BankError(f"{meta_path} is inconsistent: " + "; ".join(problems))


def _record_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "verified" / f"{key}.json"


def _stat(f: Path) -> list[int]:
    try:
        st = f.stat()
    except FileNotFoundError:
        raise BankError(f"{f} is missing from the feature bank") from None
    except OSError as exc:
        raise BankError(f"{f} cannot be read: {exc.strerror or exc}") from None
    if not os.path.isfile(f):
        raise BankError(f"{f} is not a file")
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def verify_files(path: Path, meta: dict[str, Any], always: bool = False) -> bool:
    """Check every file of the bank against ``meta``: sizes always; sha256 when ``always`` or
    when no record says the unchanged files were verified. Returns whether it hashed."""
    stats = {name: _stat(path / name) for name in sorted(meta["checksums"])}
    for name, (size, *_) in stats.items():
        if size != meta["sizes"][name]:
            raise BankError(f"{path / name} is damaged: {size} bytes, but {META} says "
                            f"{meta['sizes'][name]} (truncated or replaced)")
    record = _record_path(path)
    expected = {"bank": str(path.resolve()), META_CHECKSUM: meta[META_CHECKSUM],
                "files": stats}
    if not always:
        try:
            if json.loads(record.read_text()) == expected:
                return False
        except (OSError, ValueError):
            pass
    for name, digest in meta["checksums"].items():
        try:
            actual = file_sha256(path / name)
        except OSError as exc:
            raise BankError(f"{path / name} cannot be read: {exc.strerror or exc}") from None
        if actual != digest:
            raise BankError(f"{path / name} is damaged: its sha256 differs from the one in "
                            f"{META}; restore it or write the bank again")
    with contextlib.suppress(OSError):  # a read-only cache: hashed again at the next open
        atomic_write(record, lambda f: f.write(json.dumps(expected).encode()))
    return True
