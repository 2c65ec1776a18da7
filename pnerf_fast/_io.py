"""Safe input and output helpers shared by every layer (no pnerf_fast imports).

- :func:`safe_yaml_load`: ``yaml.safe_load`` that refuses alias bombs ("billion laughs")
  and turns every parse failure into a ValueError naming the source;
- :func:`atomic_path`: write to a temporary name in the destination folder, then
  ``os.replace`` it over the destination, so an existing output is replaced only by a
  complete new one and a crash never leaves half a file;
- :func:`check_output`: refuse an output path that equals, contains or lives inside a
  protected part of an input (a photo, a checkpoint, a subject folder, a dataset root),
  or that cannot be written, before any work is done.
"""
from __future__ import annotations

import contextlib
import os
import reprlib
import shutil
import tempfile
from pathlib import Path

#: Most alias references (``*name``) a YAML document may use: configs need none, and a
#: few dozen already expand a "billion laughs" document to billions of nodes.
MAX_YAML_ALIASES = 64

#: File names inside a subject folder or dataset root that an output must never replace.
PROTECTED_NAMES = ("transforms.json", "face.json", "splits.json")

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxstring = _repr.maxother = 60


def short_repr(x) -> str:
    """repr() bounded in size and depth (error messages must stay one short line even for
    a huge or self-referencing value)."""
    return _repr.repr(x)


def safe_yaml_load(text, source) -> object:
    """Parse YAML text (or a stream) with the safe loader; at most ``MAX_YAML_ALIASES``
    alias references. Raises ValueError naming ``source`` on any malformed input."""
    import yaml

    class _Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.events.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} alias references (*name): "
                                         "refused (an alias bomb?)")
            return super().compose_node(parent, index)

    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())
        raise ValueError(f"{source}: invalid YAML: {msg}") from None
    except RecursionError:
        raise ValueError(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode_(path, is_dir: bool = False) -> None:
    """Give a temporary file (mkstemp: 0600) or folder (mkdtemp: 0700) the permissions
    an ordinary ``open()`` / ``mkdir()`` would have given it (0666 / 0777 less the umask)."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path, *, is_dir: bool = False):
    """Yield a temporary path next to ``path`` (same suffix, so writers that look at it
    pick the same format); on success it is renamed over ``path``, on failure removed.
    ``is_dir``: the temporary path is an empty folder that replaces a folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            public_mode_(tmp, is_dir)
        if is_dir and path.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_text_atomic(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _real(p) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(p))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(out, arg: str, inputs=(), *, kind: str = "file") -> None:
    """Refuse (ValueError naming ``arg``) an output path that would destroy an input or
    cannot be written. ``inputs``: the command's input paths (files or folders; None and
    shipped-prior names that are not paths are skipped). ``kind``: "file" (a checkpoint,
    JSON, PNG, video) or "dir" (a subject folder, a folder of frames).

    Refused: an empty path; an output equal to an input file; a file output that is an
    existing folder; an output folder that is or contains an input; an output inside an
    input folder that is one of its data files (transforms.json, face.json, splits.json,
    anything under images/) or inside one of its subject folders; a path whose nearest
    existing folder cannot be written (e.g. under /proc)."""
    if out is None:
        return
    if not str(out).strip():
        raise ValueError(f"argument {arg}: must not be empty")
    o = _real(out)
    for src in inputs:
        if src is None or not str(src).strip():
            continue
        s = _real(src)
        if not s.exists():
            continue
        if o == s:
            raise ValueError(f"argument {arg}: {out} is also an input ({src}); refusing to overwrite it")
        if s.is_file() and kind == "dir" and _inside(s, o):
            raise ValueError(f"argument {arg}: {out} contains the input {src}; refusing to replace it")
        if s.is_dir():
            if _inside(s, o):
                raise ValueError(f"argument {arg}: {out} contains the input folder {src}; refusing to replace it")
            if _inside(o, s):
                rel = o.relative_to(s).parts
                in_subject = (s / rel[0] / "transforms.json").is_file() if len(rel) > 1 else False
                if rel[-1] in PROTECTED_NAMES or "images" in rel[:-1] or in_subject:
                    raise ValueError(f"argument {arg}: {out} is part of the input {src}; refusing to overwrite it")
    if kind == "file" and o.is_dir():
        raise ValueError(f"argument {arg}: {out} is a folder; give a file path")
    # The nearest existing folder must accept a new file.
    parent = o.parent if kind == "file" or not o.exists() else o
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"argument {arg}: cannot write {out}: {parent} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".pnerf-write-check-", dir=parent)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise ValueError(f"argument {arg}: cannot write {out}: {e.strerror or e}") from None
