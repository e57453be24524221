"""A folder of a user's images, read as torchvision's `ImageFolder` and
`keras.utils.image_dataset_from_directory` read it, with nothing dropped or
invented in silence.

Two layouts (`FOLDER_LAYOUT`):

    PATH/train/<class>/...  with PATH/val/<class>/... and/or PATH/test/<class>/...
    PATH/<class>/...        one folder; `validation_split` holds out a fraction

A class's images may sit in nested sub-folders (symlinks followed, loops
cut); hidden entries, non-image files and files outside the class folders
are skipped and counted (`FolderSplit.skipped`). What cannot be right is
refused before any image is decoded: an empty class folder, fewer than two
classes, a held-out class that train/ lacks. A train class missing from a
held-out split is allowed, with a warning (`FolderSplit.missing_classes`).

Pure Python over a `files` object (`os` for local paths, `tf.io.gfile` for
remote ones), so the command line checks a folder before importing
TensorFlow (`keras_smallvit.data.check_data`).
"""

import collections
import dataclasses
import os

from keras_smallvit.images import IMAGE_EXTENSIONS
from keras_smallvit.images import walk_image_files

SPLIT_FOLDERS = ("train", "val", "test")

FOLDER_LAYOUT = f"""\
  <path>/train/<class_name>/**/*   and <path>/val/<class_name>/**/* and/or <path>/test/<class_name>/**/*
  <path>/<class_name>/**/*         one folder: give validation_split (e.g. --validation-split 0.2)
(classes are the sub-folders of train/ (or of <path>), sorted; images: {', '.join(IMAGE_EXTENSIONS)},
any case, in nested folders too)"""


@dataclasses.dataclass
class FolderSplit:
    """The image files of one split folder.

    Attributes:
        directory: the split's folder (`PATH/train`, or `PATH` itself).
        class_names: the dataset's classes (train's), sorted.
        paths: image files, class by class, each class's files sorted.
        labels: the class index of each path.
        skipped: `{reason: count}` of the entries that are not images of a class.
        missing_classes: classes of train/ that have no folder here.
    """

    directory: str
    class_names: tuple
    paths: list
    labels: list
    skipped: dict
    missing_classes: tuple = ()

    def describe(self):
        """`"N images in K classes"`, with the skipped entries if any."""
        text = f"{len(self.paths):,} images in {len(self.class_names)} classes"
        return text + (f" (skipped: {describe_counts(self.skipped)})" if self.skipped else "")


def describe_counts(counts):
    return ", ".join(f"{n:,} {reason}" for reason, n in sorted(counts.items()))


def folder_layout(root, files):
    """`{split: folder}` of the image folder `root`: the split folders
    (`train` and `val`/`test`) present, or `{"train": root}` for one folder
    of class folders.

    Raises:
        FileNotFoundError: `root` is missing, or has no class folder.
        ValueError: val/ or test/ without train/.
    """
    if not files.isdir(root):
        raise FileNotFoundError(f"Image folder not found: {root!r} does not exist. Expected layout:\n{FOLDER_LAYOUT}")
    splits = {s: os.path.join(root, s) for s in SPLIT_FOLDERS if files.isdir(os.path.join(root, s))}
    if splits and "train" not in splits:
        raise ValueError(
            f"Image folder {root!r} has {'/'.join(sorted(splits))}/ but no train/ folder. Expected layout:\n"
            f"{FOLDER_LAYOUT}"
        )
    if splits:
        others = [f for f in _class_folders(root, files) if f not in SPLIT_FOLDERS]
        if others:
            raise ValueError(
                f"Image folder {root!r} holds train/ and also {', '.join(f + '/' for f in others)}: class "
                "folders belong inside train/ (and val/, test/). Move or remove them. Expected layout:\n"
                f"{FOLDER_LAYOUT}"
            )
        return splits
    if not _class_folders(root, files):
        raise FileNotFoundError(
            f"No class sub-folders in {root!r} (looked for train/, val/, test/ or <class_name>/). "
            f"Expected layout:\n{FOLDER_LAYOUT}"
        )
    return {"train": root}


def _class_folders(directory, files):
    return sorted(
        entry.rstrip("/")
        for entry in files.listdir(directory)
        if not entry.startswith(".") and files.isdir(os.path.join(directory, entry.rstrip("/")))
    )


def scan_split(directory, files, class_names=None):
    """The `FolderSplit` of `directory`'s class folders.

    Args:
        directory: a split folder (or the one folder).
        files: `os`-like file functions (`keras_smallvit.data._LocalFiles`
            or `tf.io.gfile`).
        class_names: the train classes, for a held-out split (None: this
            is train, its classes are its folders).

    Raises:
        ValueError: an empty class folder, fewer than 2 classes (train), or
            a held-out class folder that train lacks.
    """
    skipped = collections.Counter()
    folders = _class_folders(directory, files)
    for entry in files.listdir(directory):
        entry = entry.rstrip("/")
        if entry.startswith("."):
            skipped["hidden"] += 1
        elif entry not in folders:
            skipped["files outside class folders"] += 1
    is_train = class_names is None
    if is_train:
        class_names = tuple(folders)
        if len(class_names) < 2:
            found = f"only {class_names[0]!r}" if class_names else "none"
            raise ValueError(
                f"{directory!r} holds {len(class_names)} class folder ({found}): a classifier needs at least "
                f"2 classes, one sub-folder each. Expected layout:\n{FOLDER_LAYOUT}"
            )
    else:
        foreign = [c for c in folders if c not in class_names]
        if foreign:
            raise ValueError(
                f"{directory!r}: class folder(s) {', '.join(map(repr, foreign))} are not among the classes of "
                f"train/ ({', '.join(class_names)}): the model could never predict them. Rename or remove them."
            )
    paths, labels, empty = [], [], []
    seen = set()
    for label, name in enumerate(class_names):
        folder = os.path.join(directory, name)
        if name not in folders:
            continue
        class_skipped = collections.Counter()
        found = walk_image_files(folder, files, class_skipped, seen)
        skipped.update(class_skipped)
        if not found:
            empty.append(f"{folder} ({describe_counts(class_skipped) or 'nothing'} inside)")
        paths += found
        labels += [label] * len(found)
    if empty:
        raise ValueError(
            f"Empty class folder(s), with no image file ({', '.join(IMAGE_EXTENSIONS)}):\n  "
            + "\n  ".join(empty)
            + "\nAn empty class would become an output the model never sees: add its images or remove the folder."
        )
    missing = tuple(c for c in class_names if c not in folders)
    return FolderSplit(directory, class_names, paths, labels, dict(skipped), missing)
