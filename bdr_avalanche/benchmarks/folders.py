"""A link-safe walk of a split folder (``<root>/train``): its class
folders and the samples under each, every folder walked once and every file
counted once, however the tree is linked.

torchvision's ``ImageFolder`` lists a tree with ``os.walk(followlinks=True)``,
which loops through a link back into the tree until the path is too long,
and counts a file twice when two links lead to it. The ImageFolder and
ImageNet builders (:mod:`~bdr_avalanche.benchmarks.imagefolder`,
:mod:`~bdr_avalanche.benchmarks.imagenet`) and the data fingerprint list
their trees here instead (:class:`LinkSafeFolder`, :func:`folder_samples`,
:func:`class_folders`), so their layout checks, class sizes and datasets
all agree.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable

from ._common import DatasetError, error_reason

logger = logging.getLogger(__name__)

__all__ = [
    "FolderTree",
    "LinkSafeFolder",
    "class_folders",
    "folder_samples",
]


_Folder = tuple[str, str, list[tuple[str, "str | None"]]]
"""A folder walked: its path, its real path, and ``(name, link target or
None)`` of its files that may be samples."""


class FolderTree:
    """The class folders of a split folder (``<root>/train``) and the files
    under each, every folder walked once and every file counted once, however
    the tree is linked.

    Every listing of such a tree goes through this class: the class folders
    (:func:`class_folders`, which the layout checks use), the samples that
    torchvision's ``ImageFolder`` loads (:class:`LinkSafeFolder`,
    :func:`folder_samples`), hence also the class sizes counted for the
    config checks and the images decoded once with ``in_memory``: all of
    them agree.

    Symbolic links are followed where they lead out of the tree: a class
    folder, a sub-folder or an image may link to a folder or a file
    elsewhere (a data set linked in from another disk). A link to a folder
    is *not* followed when it leads

    * back into the tree (``train/c0/loop -> ..``), or into the folder that
      a linked class folder leads to (then that class owns it);
    * to a folder that holds the tree or such a folder (``-> /``,
      ``-> ../../..``);
    * to a folder already walked: a loop among folders outside the tree,
      the folder of another class, or a second link to the same folder
      (folders are told apart by ``(st_dev, st_ino)``; the class walked
      first, in sorted order, keeps it).

    Such a link is skipped, with a warning (logged once per process) that
    names it, where it leads and why, and the walk goes on: the tree is
    read as if the link were not there, so ``train/c0/loop -> ..`` counts
    the real images of ``c0`` once. A class folder left without images
    still fails, and that error names the links skipped in it. Files are
    counted once too: a link to an image that is also found at its own
    place in the tree, or through an earlier link, is left out (one warning
    per walk says how many). Only regular files count.

    :raises DatasetError: a folder cannot be listed, or a link with an
        accepted file extension leads nowhere (or into a loop of links);
        the message names it.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = os.fspath(folder)
        self.real = os.path.realpath(self.folder)

    def class_folders(self) -> list[str]:
        """Sorted names of the class folders: the sub-folders and the links
        to folders outside the tree (a link back into the tree, or to a
        folder holding it, is skipped with a warning)."""
        roots: dict[str, str | None] = {self.real: None}
        holders = _holders(roots)
        names = []
        for entry in self._list(self.folder):
            if not entry.is_symlink():
                if entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
                continue
            info = self._follow(entry.path, lambda path: False)
            if info is None or not stat.S_ISDIR(info.st_mode):
                continue  # a broken link or a file: not a class folder
            real = os.path.realpath(entry.path)
            reason = self._leads_back(real, roots, holders)
            if reason is not None:
                self._skip(entry.path, real, reason)
                continue
            names.append(entry.name)
        return sorted(names)

    def samples(
        self, class_to_idx: dict[str, int], is_valid: Callable[[str], bool]
    ) -> tuple[list[tuple[str, int]], dict[str, list[str]]]:
        """``(path, class index)`` of every file that passes ``is_valid``
        under the class folders of ``class_to_idx``, in torchvision's order
        (classes sorted by name, then folders by path, then files by name),
        and, per class, the links skipped in its folder."""
        tree_only: dict[str, str | None] = {self.real: None}
        tree_holders = _holders(tree_only)
        roots = dict(tree_only)
        starts = []  # (name, path, real, key): the class folders to walk
        skipped: dict[str, list[str]] = {}
        for name in sorted(class_to_idx):
            path = os.path.join(self.folder, name)
            try:
                info = os.stat(path)
            except OSError:
                continue  # no such folder (torchvision skips it too)
            if not stat.S_ISDIR(info.st_mode):
                continue
            real = os.path.realpath(path)
            if os.path.islink(path):
                reason = self._leads_back(real, tree_only, tree_holders)
                if reason is not None:
                    skipped.setdefault(name, []).append(self._skip(path, real, reason))
                    continue
                roots.setdefault(real, name)
            starts.append((name, path, real, (info.st_dev, info.st_ino)))
        holders = _holders(roots)
        owners: dict[tuple[int, int], str] = {}
        walked: dict[tuple[int, int], str] = {}
        found: list[tuple[str, list[_Folder]]] = []
        for name, path, real, key in starts:
            if key in owners:
                reason = f"it leads to the folder of class {owners[key]}"
                skipped.setdefault(name, []).append(self._skip(path, real, reason))
                continue
            owners[key] = name
        for name, path, real, key in starts:
            if owners.get(key) != name or key in walked:
                continue
            walk = _Walk(self, name, roots, holders, owners, walked, is_valid)
            found.append((name, walk.run(path, real, key)))
            if walk.skipped:
                skipped.setdefault(name, []).extend(walk.skipped)
        return self._count_once(found, class_to_idx), skipped

    def _count_once(
        self,
        found: list[tuple[str, list[_Folder]]],
        class_to_idx: dict[str, int],
    ) -> list[tuple[str, int]]:
        """The samples of the folders ``found``: files at their own place
        first, then each link whose target is not counted yet."""
        links = any(
            target is not None
            for _, folders in found
            for _, _, files in folders
            for _, target in files
        )
        counted = set()
        if links:  # the real paths of the files that are not links
            counted = {
                os.path.join(real, file_name)
                for _, folders in found
                for _, real, files in folders
                for file_name, target in files
                if target is None
            }
        samples, repeats = [], []
        for name, folders in found:
            label = class_to_idx[name]
            for folder, _, files in sorted(folders, key=lambda item: item[0]):
                for file_name, target in files:
                    path = os.path.join(folder, file_name)
                    if target is not None:
                        if target in counted:
                            repeats.append(f"{path} -> {target}")
                            continue
                        counted.add(target)
                    samples.append((path, label))
        if repeats:
            _warn_once(
                f"{self.folder}: left out {len(repeats)} link(s) to files counted "
                f"already, so that each file counts once (e.g. {repeats[0]})"
            )
        return samples

    def _list(self, folder: str) -> list[os.DirEntry]:
        """The entries of ``folder``, sorted by name."""
        try:
            with os.scandir(folder) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except OSError as err:
            raise DatasetError(
                f"{folder}: cannot list the folder ({error_reason(err)})"
            ) from err

    def _follow(
        self, path: str, needed: Callable[[str], bool]
    ) -> os.stat_result | None:
        """What the link ``path`` leads to; ``None`` if it leads nowhere,
        which raises :class:`DatasetError` when ``needed(path)`` (a file
        that would be a sample) and is otherwise left alone with a warning
        for a loop of links."""
        try:
            return os.stat(path)
        except OSError as err:
            if needed(path):
                raise DatasetError(
                    f"{path}: the link cannot be followed ({error_reason(err)}); "
                    "remove it or restore what it leads to"
                ) from err
            if err.errno == errno.ELOOP:
                _warn_once(f"skipping the link {path}: {error_reason(err)}")
            return None

    def _leads_back(
        self, real: str, roots: dict[str, str | None], holders: dict[str, str]
    ) -> str | None:
        """Why a link to the folder ``real`` must not be followed, if it
        leads into the tree or a linked class folder, or above one."""
        for folder in _lineage(real):
            if folder in roots:
                owner = roots[folder]
                if owner is None:
                    return f"it leads back into {self.folder}"
                return f"it leads into the folder of class {owner} ({folder})"
        if real in holders:
            return f"it leads to a folder that holds {holders[real]}"
        return None

    def _skip(self, path: str, real: str, reason: str) -> str:
        note = f"{path} -> {real}: {reason}"
        _warn_once(f"skipping the link {note}; each folder is read once")
        return note


class _Walk:
    """One class folder of a :class:`FolderTree`, walked depth first."""

    def __init__(
        self,
        tree: FolderTree,
        name: str,
        roots: dict[str, str | None],
        holders: dict[str, str],
        owners: dict[tuple[int, int], str],
        walked: dict[tuple[int, int], str],
        is_valid: Callable[[str], bool],
    ) -> None:
        self.tree, self.name, self.roots, self.holders = tree, name, roots, holders
        self.owners, self.walked, self.is_valid = owners, walked, is_valid
        self.skipped: list[str] = []

    def run(self, path: str, real: str, key: tuple[int, int]) -> list[_Folder]:
        """``(folder, its real path, [(file name, where the file links to,
        or None)])`` for every folder walked."""
        self.walked[key] = path
        # (path, real path, node); a node is (key, path, real path, parent
        # node): the folders from the class folder down to this one
        stack: list[tuple[str, str, tuple]] = [(path, real, (key, path, real, None))]
        folders = []
        while stack:
            path, real, node = stack.pop()
            files, subfolders = [], []
            for entry in self.tree._list(path):
                if entry.is_symlink():
                    info = self.tree._follow(entry.path, self.is_valid)
                    if info is None:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        if self.is_valid(entry.path):
                            target = os.path.realpath(entry.path)
                            files.append((entry.name, target))
                        continue
                    if not stat.S_ISDIR(info.st_mode):
                        continue
                    target = os.path.realpath(entry.path)
                    reason = self.tree._leads_back(target, self.roots, self.holders)
                    if reason is None:
                        reason = self._holds(target, node)
                elif entry.is_dir(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    target, reason = os.path.join(real, entry.name), None
                else:
                    if entry.is_file(follow_symlinks=False) and self.is_valid(
                        entry.path
                    ):
                        files.append((entry.name, None))
                    continue
                sub_key = (info.st_dev, info.st_ino)
                if reason is None:
                    reason = self._walked_already(sub_key, node)
                if reason is not None:
                    self.skipped.append(self.tree._skip(entry.path, target, reason))
                    continue
                self.walked[sub_key] = entry.path
                subfolders.append(
                    (entry.path, target, (sub_key, entry.path, target, node))
                )
            folders.append((path, real, files))
            stack.extend(reversed(subfolders))
        return folders

    @staticmethod
    def _holds(target: str, node: tuple) -> str | None:
        """Why not to follow a link to ``target`` if that folder holds one of
        the folders the link is in (``-> ..`` outside the tree)."""
        inside = os.path.join(target, "")
        while node is not None:
            if node[2] == target or node[2].startswith(inside):
                return f"it leads to a folder that holds {node[1]} (a loop)"
            node = node[3]
        return None

    def _walked_already(self, key: tuple[int, int], node: tuple) -> str | None:
        owner = self.owners.get(key)
        if owner is not None and owner != self.name:
            return f"it leads to the folder of class {owner}"
        if key not in self.walked:
            return None
        while node is not None:
            if node[0] == key:
                return f"it leads back to {node[1]}, a folder it is in (a loop)"
            node = node[3]
        return f"that folder is read already, as {self.walked[key]}"


def _lineage(path: str) -> list[str]:
    """``path`` and every folder above it, up to the file system root."""
    folders = [path]
    while (parent := os.path.dirname(folders[-1])) != folders[-1]:
        folders.append(parent)
    return folders


def _holders(roots: dict[str, str | None]) -> dict[str, str]:
    """Every folder above one of ``roots``: what it holds, for messages."""
    holders: dict[str, str] = {}
    for root, owner in roots.items():
        what = "the tree" if owner is None else f"the folder of class {owner}"
        for folder in _lineage(root)[1:]:
            holders.setdefault(folder, f"{what} ({root})")
    return holders


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning, once per process: the layout checks,
    the class sizes and the datasets each walk the same tree."""
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)


def folder_samples(
    directory: str | os.PathLike,
    class_to_idx: dict[str, int],
    extensions: str | tuple[str, ...] | None = None,
    is_valid_file: Callable[[str], bool] | None = None,
    allow_empty: bool = False,
) -> list[tuple[str, int]]:
    """torchvision's ``make_dataset`` (same arguments, order and errors),
    walking ``directory`` with :class:`FolderTree`: each folder once, each
    file once, and no link followed back into the tree.

    :raises FileNotFoundError: a class has no valid file (unless
        ``allow_empty``); the message also names the links skipped in it.
    :raises DatasetError: as :class:`FolderTree`.
    """
    if class_to_idx is None:
        raise ValueError("The class_to_idx parameter cannot be None.")
    if not class_to_idx:
        raise ValueError(
            "'class_to_index' must have at least one entry to collect any samples."
        )
    if (extensions is None) == (is_valid_file is None):
        raise ValueError(
            "Both extensions and is_valid_file cannot be None or not None at the "
            "same time"
        )
    if extensions is not None:
        suffixes = (extensions,) if isinstance(extensions, str) else tuple(extensions)

        def is_valid_file(path: str) -> bool:
            return path.lower().endswith(suffixes)

    assert is_valid_file is not None  # given, or built from extensions above
    tree = FolderTree(os.path.expanduser(os.fspath(directory)))
    samples, skipped = tree.samples(class_to_idx, is_valid_file)
    available = {index for _, index in samples}
    empty = sorted(
        name for name, index in class_to_idx.items() if index not in available
    )
    if empty and not allow_empty:
        message = f"Found no valid file for the classes {', '.join(empty)}. "
        if extensions is not None:
            message += "Supported extensions are: " + (
                extensions if isinstance(extensions, str) else ", ".join(extensions)
            )
        notes = [note for name in empty for note in skipped.get(name, [])]
        if notes:
            message += f" (skipped links: {'; '.join(notes)})"
        raise FileNotFoundError(message)
    return samples


def class_folders(folder: str | os.PathLike) -> list[str]:
    """Sorted names of the sub-folders of ``folder``: the classes, in label
    order, that :class:`LinkSafeFolder` finds there (see :class:`FolderTree`
    for links).

    :raises DatasetError: ``folder`` cannot be listed.
    """
    return FolderTree(folder).class_folders()


class LinkSafeFolder:
    """Put before torchvision's ``ImageFolder`` (or another
    ``DatasetFolder``) in the bases of a class: classes and samples are
    then listed by :class:`FolderTree` rather than by ``os.walk`` with
    ``followlinks=True``, which loops through a link back into the tree
    until the path is too long. Labels stay the sorted class folders."""

    def find_classes(
        self, directory: str | os.PathLike
    ) -> tuple[list[str], dict[str, int]]:
        classes = class_folders(directory)
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: index for index, name in enumerate(classes)}

    @staticmethod
    def make_dataset(
        directory: str | os.PathLike,
        class_to_idx: dict[str, int],
        extensions: str | tuple[str, ...] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        return folder_samples(
            directory, class_to_idx, extensions, is_valid_file, allow_empty
        )
