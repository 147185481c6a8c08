"""Archives of image folders: each format, extracted once, nested top-level folders, and refusals."""
import io
import logging
import shutil
import tarfile
import zipfile

import pytest
import torch
from data_builders import build_archive, build_image_folder, pattern, png_bytes

import glico.data.archives as archives_mod
import glico.data.decode as decode_mod
import glico.data.folder as folder_mod
from glico.data import DataError, MissingDataError, extract_archive, load_data, load_image_folder

FORMATS = ["data.tar", "data.tar.gz", "data.tar.xz", "data.zip"]


@pytest.mark.parametrize("fname", FORMATS)
def test_archive_equals_folder(image_folder, tmp_path, cache, fname):
    archive = build_archive(image_folder, tmp_path / fname)
    direct = load_image_folder(image_folder, cache_root=cache, cache_decoded=False)
    packed = load_data(f"folder:{archive}", root_cache=cache)
    assert packed.name == "data"
    assert packed.train.class_names == direct.train.class_names
    assert torch.equal(packed.train.images, direct.train.images)
    assert torch.equal(packed.test.images, direct.test.images)
    assert torch.equal(packed.train.labels, direct.train.labels)
    (extracted,) = (cache / "archives").iterdir()
    assert extracted.name.startswith("data-") and (extracted / "train" / "cat" / "0000.png").is_file()


@pytest.mark.parametrize("fname", ["cifar10.tar.xz", "cifar10.zip"])
def test_single_top_level_folder(tmp_path, cache, fname):
    src = build_image_folder(tmp_path / "src", {"plane": (2, 1), "ship": (3, 1)}, fmt="jpg")
    archive = build_archive(src, tmp_path / fname, arcname="cifar10")
    data = load_data(f"folder:{archive}", root_cache=cache)
    assert data.train.class_names == ("plane", "ship") and len(data.train) == 5 and len(data.test) == 2


def test_extracted_once(image_folder, tmp_path, cache, monkeypatch):
    archive = build_archive(image_folder, tmp_path / "data.tar.gz")
    first = load_image_folder(archive, cache_root=cache, cache_decoded=False)
    (extracted,) = (cache / "archives").iterdir()
    marker = extracted / "train" / "extra-marker"
    marker.write_text("survives only if the folder is reused")

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted a second time")

    monkeypatch.setattr(archives_mod, "_extract_tar", no_extraction)
    second = load_image_folder(archive, cache_root=cache, cache_decoded=False)
    assert marker.is_file() and torch.equal(first.train.images, second.train.images)
    assert [p.name for p in (cache / "archives").iterdir()] == [extracted.name]


def test_second_load_reads_only_the_decoded_cache(image_folder, tmp_path, cache, monkeypatch):
    archive = build_archive(image_folder, tmp_path / "data.zip")
    first = load_image_folder(archive, cache_root=cache)
    shutil.rmtree(cache / "archives")  # not even the extracted folder is needed any more

    def fail(*args, **kwargs):
        raise AssertionError("should have come from the decoded cache")

    monkeypatch.setattr(folder_mod, "extract_archive", fail)
    monkeypatch.setattr(folder_mod, "decode_files", fail)
    second = load_image_folder(archive, cache_root=cache)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)


@pytest.mark.parametrize("fname,arcname", [("data.tar", ""), ("data.zip", "top/level")])
def test_first_load_decodes_from_memory(image_folder, tmp_path, cache, monkeypatch, fname, arcname):
    """Extraction hands the bytes to the decoder, so no image file is read back from disk."""
    archive = build_archive(image_folder, tmp_path / fname, arcname=arcname)

    def no_reading(path):
        raise AssertionError(f"read {path} from disk")

    monkeypatch.setattr(decode_mod, "decode_file", no_reading)
    data = load_image_folder(archive, cache_root=cache)
    assert len(data.train) == 12


def test_changed_archive_is_extracted_again(image_folder, tmp_path, cache):
    archive = build_archive(image_folder, tmp_path / "data.tar")
    load_image_folder(archive, cache_root=cache)
    build_image_folder(image_folder, {"cat": (9, 2)})
    build_archive(image_folder, archive)
    data = load_image_folder(archive, cache_root=cache)
    assert len(list((cache / "archives").iterdir())) == 2
    assert int(data.train.class_counts()[1]) == 9


def _tar_with(tmp_path, members: dict[str, bytes], fname="evil.tar"):
    path = tmp_path / fname
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _good_members() -> dict[str, bytes]:
    img = png_bytes(pattern("train", 0, 0))
    return {"train/a/0.png": img, "train/b/0.png": img, "test/a/0.png": img, "test/b/0.png": img}


@pytest.mark.parametrize("bad", ["../escaped.png", "train/../../escaped.png", "/tmp/escaped-glico-test.png"])
def test_tar_path_traversal_refused(tmp_path, cache, bad):
    archive = _tar_with(tmp_path, {**_good_members(), bad: b"payload"})
    with pytest.raises(DataError, match="points outside the extraction folder"):
        load_data(f"folder:{archive}", root_cache=cache)
    assert not (tmp_path / "escaped.png").exists() and not (cache / "escaped.png").exists()
    assert list((cache / "archives").iterdir()) == [], "no partial extraction is left behind"


def test_zip_path_traversal_refused(tmp_path, cache):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in _good_members().items():
            zf.writestr(name, data)
        zf.writestr("../../escaped.png", b"payload")
    with pytest.raises(DataError, match=r"'\.\./\.\./escaped\.png' that points outside"):
        extract_archive(archive, cache)
    assert not (tmp_path / "escaped.png").exists()
    assert list((cache / "archives").iterdir()) == []


def test_links_in_tar_are_skipped(tmp_path, cache, caplog):
    path = _tar_with(tmp_path, _good_members(), "links.tar")
    with tarfile.open(path, "a") as tf:
        link = tarfile.TarInfo("train/a/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with caplog.at_level(logging.WARNING):
        data = load_data(f"folder:{path}", root_cache=cache)
    assert len(data.train) == 2 and "skipping train/a/link.png" in caplog.text
    (extracted,) = (cache / "archives").iterdir()
    assert not (extracted / "train" / "a" / "link.png").exists()


@pytest.mark.parametrize("fname,content", [
    ("junk.tar.xz", b"this is not an xz stream at all" * 10),
    ("junk.tar", b"\x00" * 10 + b"garbage" * 100),
    ("junk.zip", b"PK but not really a zip file"),
    ("empty.tar.gz", b""),
])
def test_not_an_archive(tmp_path, cache, fname, content):
    path = tmp_path / fname
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"could not be read as a (tar|zip) archive.*wrong extension|contains no files"):
        load_data(f"folder:{path}", root_cache=cache)
    assert list((cache / "archives").iterdir()) == []


def test_wrong_extension(image_folder, tmp_path, cache):
    zipped = build_archive(image_folder, tmp_path / "data.zip")
    misnamed = tmp_path / "data.tar.gz"
    shutil.copy(zipped, misnamed)
    with pytest.raises(DataError, match=r"data\.tar\.gz could not be read as a tar archive"):
        load_data(f"folder:{misnamed}", root_cache=cache)


@pytest.mark.parametrize("fname,keep", [(f, k) for f in ("data.tar.xz", "data.tar.gz", "data.tar.bz2")
                                         for k in (0.5, 0.9, 0.99)] + [("data.tar", 0.5)])
def test_truncated_archive(image_folder, tmp_path, cache, fname, keep):
    """A cut-off compressed stream is an error, not a silently shorter data set. (A plain .tar cut inside a
    member is caught by tarfile; one cut exactly between members cannot be told from a shorter archive.)"""
    archive = build_archive(image_folder, tmp_path / fname)
    archive.write_bytes(archive.read_bytes()[: int(archive.stat().st_size * keep) // 7 * 7 + 3])
    with pytest.raises(DataError, match="could not be read as a tar archive"):
        load_data(f"folder:{archive}", root_cache=cache)
    assert list((cache / "archives").iterdir()) == []


def test_archive_of_class_folders_without_train_and_test(tmp_path, cache):
    """Class folders without train/ and test/ are training images only (issue 17); loose files are refused."""
    img = png_bytes(pattern("train", 0, 0))
    archive = _tar_with(tmp_path, {"photos/a/0.png": img, "photos/a/1.png": img, "photos/b/0.png": img}, "flat.tar")
    data = load_data(f"folder:{archive}", root_cache=cache)
    assert data.test is None and data.train.class_names == ("a", "b") and data.train.class_counts().tolist() == [2, 1]
    with pytest.raises(DataError, match="--test-fraction F"):
        data.require_test()
    loose = _tar_with(tmp_path, {"photos/0.png": img, "photos/1.png": img}, "loose.tar")
    with pytest.raises(DataError, match=r"loose\.tar has no train/ and test/ folders.*folder of class folders"):
        load_data(f"folder:{loose}", root_cache=cache)


def test_unsupported_archive_name(tmp_path, cache):
    path = tmp_path / "data.rar"
    path.write_bytes(b"Rar!")
    with pytest.raises(DataError, match=r"\.tar, \.tar\.gz"):
        extract_archive(path, cache)


def test_missing_archive(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        extract_archive(tmp_path / "nope.tar", tmp_path / "cache")


def test_default_cache_dir_respects_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GLICO_CACHE_DIR", str(tmp_path / "mine"))
    assert archives_mod.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("GLICO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert archives_mod.default_cache_dir() == tmp_path / "xdg" / "glico"


def test_large_members_are_streamed_and_read_back(image_folder, tmp_path, cache, monkeypatch):
    monkeypatch.setattr(archives_mod, "_SMALL_FILE", 0)  # every member counts as large
    archive = build_archive(image_folder, tmp_path / "data.tar.gz")
    packed = load_image_folder(archive, cache_root=cache)
    direct = load_image_folder(image_folder, cache_root=cache, cache_decoded=False)
    assert torch.equal(packed.train.images, direct.train.images)


def test_concurrent_extraction_keeps_the_winner(image_folder, tmp_path, cache, monkeypatch):
    """Another process renamed its complete folder into place first: ours is discarded, theirs used."""
    archive = build_archive(image_folder, tmp_path / "data.tar")
    real_rename = archives_mod.os.rename

    def lose_the_race(src, dst):
        real_rename(src, dst)  # "the other process" wins with identical content...
        shutil.copytree(dst, src)  # ...and our own copy is still there
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(archives_mod.os, "rename", lose_the_race)
    folder = extract_archive(archive, cache)
    assert folder.is_dir() and [p.name for p in (cache / "archives").iterdir()] == [folder.name]
