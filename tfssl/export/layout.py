"""TF Serving directory layout: `<export_base>/<model_name>/<version>/`, published atomically.

TF Serving's file-system source polls `<export_base>/<model_name>/` and loads the child directories
whose names are integers, newest first. A version directory must therefore appear complete or not at
all: everything is written to a hidden temporary directory beside it (same file system), flushed to
disk, and renamed into place in one `rename(2)`. Hidden names (".tmp-...") never parse as versions.
"""
import errno
import os
import shutil
import uuid

SAVED_MODEL_FILE = "saved_model.pb"
TMP_PREFIX = ".tmp-"


def is_saved_model_dir(path):
    """True when `path` holds a SavedModel (`saved_model.pb`)."""
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


def list_versions(model_dir):
    """Integer version numbers under `model_dir` that hold a SavedModel, ascending.

    Args:
      model_dir: `<export_base>/<model_name>`; may not exist yet (-> []).

    Returns:
      Sorted list of ints (directories named like "12" with a `saved_model.pb`).
    """
    if not os.path.isdir(model_dir):
        return []
    versions = []
    for name in os.listdir(model_dir):
        if name.isdigit() and is_saved_model_dir(os.path.join(model_dir, name)):
            versions.append(int(name))
    return sorted(versions)


def next_version(model_dir):
    """1 + the highest integer-named directory in `model_dir` (complete or not), or 1."""
    if not os.path.isdir(model_dir):
        return 1
    taken = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(taken, default=0) + 1


def check_version(version):
    """Validates an explicit version number (TF Serving versions are positive int64)."""
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**63:
        raise ValueError(f"version must be a positive integer (TF Serving's version directory), got {version!r}")
    return version


def resolve_version_dir(path):
    """The SavedModel directory that `path` names.

    Args:
      path: a version directory (holds `saved_model.pb`; returned as is), or a model directory
        `<export_base>/<model_name>` (-> its highest complete integer version).

    Returns:
      Absolute path of a directory that holds a SavedModel.

    Raises:
      FileNotFoundError: `path` is neither (the message says what was found instead).
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} does not exist: pass an export's version dir or model dir "
                                "(<export_base>/<model_name>)")
    if is_saved_model_dir(path):
        return path
    versions = list_versions(path)
    if versions:
        return os.path.join(path, str(versions[-1]))
    nested = [name for name in sorted(os.listdir(path)) if list_versions(os.path.join(path, name))]
    if nested:
        raise FileNotFoundError(f"{path} looks like an export base holding models {nested}; pass "
                                f"{os.path.join(path, nested[0])} (a model dir) or one of its version dirs")
    raise FileNotFoundError(f"{path} holds no SavedModel (saved_model.pb) and no integer version dir with one")


def new_temp_dir(parent):
    """A fresh hidden directory under `parent` (created with its parents) to write an export into."""
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}")
    os.mkdir(path)
    return path


def _fsync_tree(root):
    """Flushes every file and directory under `root` to disk, so a rename never publishes data still
    sitting in the page cache (a crash right after the rename would otherwise leave empty files)."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename_if_absent(src, dst):
    """rename(2) that refuses to replace a non-empty `dst`; False when `dst` was taken."""
    try:
        os.rename(src, dst)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            return False
        raise
    return True


def publish_version(tmp_dir, model_dir, version=None):
    """Renames a completely written `tmp_dir` to `<model_dir>/<version>`.

    Args:
      tmp_dir: directory from `new_temp_dir(model_dir)`, fully written.
      model_dir: `<export_base>/<model_name>`.
      version: int, or None for 1 + the highest existing version. With None, a version taken by a
        concurrent exporter between choosing and renaming is skipped and the next one tried.

    Returns:
      The published version directory.

    Raises:
      ValueError: an explicit `version` already exists.
    """
    _fsync_tree(tmp_dir)
    while True:
        chosen = version if version is not None else next_version(model_dir)
        target = os.path.join(model_dir, str(chosen))
        if _rename_if_absent(tmp_dir, target):
            _fsync_dir(model_dir)
            return target
        if version is not None:
            raise ValueError(f"{target} already exists; pick another --version or omit it to use the next one")


def publish_dir(tmp_dir, export_dir, overwrite=False):
    """Renames a completely written `tmp_dir` (a sibling of `export_dir`) to `export_dir`.

    With `overwrite`, an existing `export_dir` is first moved aside and deleted after the new one is
    in place, so the path never holds a partial export.

    Raises:
      ValueError: `export_dir` exists and not `overwrite`.
    """
    _fsync_tree(tmp_dir)
    if _rename_if_absent(tmp_dir, export_dir):
        return export_dir
    if not overwrite:
        raise ValueError(f"{export_dir} already exists; choose a new --export_dir or pass --overwrite")
    trash = f"{export_dir}{TMP_PREFIX}old-{uuid.uuid4().hex[:8]}"
    os.rename(export_dir, trash)
    os.rename(tmp_dir, export_dir)
    shutil.rmtree(trash, ignore_errors=True)
    return export_dir
