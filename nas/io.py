"""Safe, atomic file helpers: every artefact is written to a temp file and renamed.

A killed job therefore never leaves a truncated artefact behind. Readers only use
formats that cannot execute code (JSON, YAML ``safe_load``, safetensors).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ArtifactError

__all__ = ["atomic_path", "check_output_file", "write_text", "write_json", "read_text", "read_json", "read_yaml",
           "parse_yaml", "write_yaml"]


def check_output_file(path: str | os.PathLike) -> Path:
    """``path`` as a file to (over)write: refuse a directory, or a parent that is a file,
    before any work is done (the messages name ``path``, never a temp file)."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory; give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ArtifactError(f"cannot write {path}: {parent} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ArtifactError(f"cannot write {path}: {parent} is not writable")
            break
    return path


def remove_dead_temps(parent: Path, name: str) -> None:
    """Delete the temp files that writers of ``parent/name`` killed with SIGKILL left.

    Only files named as :func:`atomic_path` names them (``.NAME.PID.RANDOM.tmp``) whose
    process ``PID`` no longer exists: never a file this tool did not write, never one a
    live process is writing.
    """
    pattern = re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp$")
    try:
        candidates = [p for p in parent.iterdir() if pattern.match(p.name)]
    except OSError:
        return
    for p in candidates:
        try:
            os.kill(int(pattern.match(p.name).group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                p.unlink()
        except (PermissionError, OverflowError, ValueError):
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path``.

    Example:
        >>> with atomic_path("out.bin") as tmp:  # doctest: +SKIP
        ...     torch.save(obj, tmp)
    """
    path = check_output_file(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(f"cannot create directory {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise ArtifactError(f"output directory {parent} is not writable")
    remove_dead_temps(parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 (and some writers recreate the file): give the usual permissions
        os.chmod(tmp_path, 0o666 & ~umask)
        try:
            os.replace(tmp_path, path)
        except OSError as e:
            raise ArtifactError(f"cannot write {path}: {e.strerror}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as block-style YAML."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


# Files a user hands us are read whole: refuse anything larger than any config could be.
MAX_TEXT_BYTES = 64 * 2**20


def read_text(path: str | os.PathLike, *, what: str = "file",
              max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file; missing, too large or not UTF-8 is one :class:`ArtifactError` line."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ArtifactError(f"{what} {path} is {size / 2**20:.0f} MiB, larger than any "
                            f"{what} can be ({max_bytes / 2**20:.0f} MiB at most)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{what} {path} is not UTF-8 text (byte {e.start}: "
                            f"{e.object[e.start:e.start + 1]!r})") from None
    except OSError as e:
        raise ArtifactError(f"cannot read {what} {path}: {e.strerror}") from None


class _SafeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without aliases: ``*name`` lets a 2 KB file expand to gigabytes
    (billion laughs), and no file of this tool needs one."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def _yaml_error(source: str, e: yaml.YAMLError) -> ArtifactError:
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return ArtifactError(f"{source}: malformed YAML{where}: {str(problem)[:200]}")


def parse_yaml(text: str, *, source: str = "YAML text", all_documents: bool = False) -> Any:
    """Parse YAML safely: no code, no aliases, nesting bounded by Python's recursion limit;
    every failure is one :class:`ArtifactError` line naming ``source``."""
    try:
        if all_documents:
            return list(yaml.load_all(text, Loader=_SafeLoader))
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(source, e) from None
    except RecursionError:
        raise ArtifactError(f"{source}: YAML nested too deeply") from None


def read_json(path: str | os.PathLike, *, what: str = "file") -> Any:
    """Read JSON, turning a missing, corrupted, non-UTF-8 or absurdly nested file into an
    :class:`ArtifactError`."""
    path = Path(path)
    text = read_text(path, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{what} {path} is corrupted or truncated: {e}") from None
    except RecursionError:
        raise ArtifactError(f"{what} {path} is nested too deeply") from None


def read_yaml(path: str | os.PathLike, *, what: str = "file") -> Any:
    """Read YAML safely (:func:`parse_yaml`); a missing or malformed file is an
    :class:`ArtifactError`."""
    return parse_yaml(read_text(path, what=what), source=str(path))
