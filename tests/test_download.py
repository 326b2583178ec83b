"""Downloads against a local HTTP server on 127.0.0.1: success, 404, a transfer cut off mid-way, an unusable file,
a wrong sha256, two downloads of one file at once; the image archive (download, safe extraction of one folder,
reuse, interruption); main.py's data sets and fetching what is missing on its first run."""
import dataclasses
import glob
import hashlib
import http.server
import io
import os
import threading
import time
import zipfile

import pytest
import torch
from PIL import Image

import main
import downloads
import image_features
import save_vgg_feature
import vgg
from conftest import SMALL_MODEL, make_tweets, write_conll

FILES = {}  # path on the server -> bytes
REQUESTS = []  # paths asked for, in order
RELEASE = threading.Event()  # a /slow/ answer sends its second half once this is set


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        REQUESTS.append(self.path)
        if self.path.startswith("/cut/"):  # announces 100 kB, sends 1 kB, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.connection.shutdown(2)
        elif self.path in FILES:
            body = FILES[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path.startswith("/slow/"):
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                RELEASE.wait(timeout=10)
                body = body[len(body) // 2:]
            self.wfile.write(body)
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


# ----------------------------------------------------------------------------------------------------------------
# utils.download

def test_success_lands_only_the_final_file_and_logs_its_sha256(server, tmp_path, caplog):
    FILES["/vectors.vec"] = b"cat 1 2 3\ndog 4 5 6\n"
    dest = tmp_path / "sub" / "vectors.vec"
    with caplog.at_level("INFO", logger="downloads"):
        downloads.download(server + "/vectors.vec", dest, check=downloads.check_text_lines, quiet=True)
    assert dest.read_bytes() == FILES["/vectors.vec"]
    assert [p.name for p in dest.parent.iterdir()] == ["vectors.vec"]
    assert hashlib.sha256(FILES["/vectors.vec"]).hexdigest() in caplog.text


@pytest.mark.parametrize("path, reason", [("/nope", "404"), ("/cut/big.pt", "incomplete"),
                                          ("/empty.vec", "the server sent an empty file"),
                                          ("/broken.pt", "not a complete torch file")])
def test_failures_leave_no_file_and_say_what_to_do(server, tmp_path, path, reason):
    FILES["/empty.vec"] = b""
    FILES["/broken.pt"] = b"PK\x03\x04 not really a zip"
    dest = tmp_path / "thing.pt"
    with pytest.raises(downloads.DownloadError) as err:
        downloads.download(server + path, dest, check=downloads.check_torch_zip, avoid_hint="use --no_img", quiet=True)
    message = str(err.value)
    assert f"Could not download {server}{path}" in message and f"to {dest}" in message
    assert reason in message and "use --no_img" in message and "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


def test_hash_prefix_is_checked(server, tmp_path):
    FILES["/weights.bin"] = b"some weights"
    digest = hashlib.sha256(FILES["/weights.bin"]).hexdigest()
    dest = tmp_path / "weights.bin"
    downloads.download(server + "/weights.bin", dest, hash_prefix=digest[:8], quiet=True)
    assert dest.read_bytes() == FILES["/weights.bin"]

    dest.unlink()
    with pytest.raises(downloads.DownloadError) as err:
        downloads.download(server + "/weights.bin", dest, hash_prefix="397923af", quiet=True)
    assert f"its sha256 is {digest}, expected one starting with 397923af" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_two_downloads_of_one_file_keep_their_own_partial_files(server, tmp_path):
    """A run still receiving the file is not disturbed by another run that fails on the same destination, nor
    is a third run's partial file (another process) touched by either."""
    FILES["/slow/model.pt"] = body = os.urandom(200_000)
    dest = tmp_path / "model.pt"
    foreign = tmp_path / "model.pt.99999.abcdefgh.part"
    foreign.write_bytes(b"another process is writing this")
    RELEASE.clear()
    results = {}
    slow = threading.Thread(target=lambda: results.update(slow=downloads.download(server + "/slow/model.pt", dest,
                                                                               quiet=True)))
    slow.start()
    ours = f"model.pt.{os.getpid()}."
    deadline = time.time() + 10
    while not any(p.name.startswith(ours) for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(downloads.DownloadError):
        downloads.download(server + "/cut/model.pt", dest, quiet=True)  # fails and cleans up while the other runs
    RELEASE.set()
    slow.join(timeout=20)
    assert results["slow"] == str(dest) and dest.read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", foreign.name]


# ----------------------------------------------------------------------------------------------------------------
# Image archives (downloads.fetch_images): the layout of IJCAI2019_data.zip, with a few small JPEGs

IMAGES = {"twitter2015_images": ["1015799", "32977"], "twitter2017_images": ["17_06_12483", "16_05_01_6", "O_1926"]}


def jpeg(seed):
    image = Image.new("RGB", (40 + seed, 30), (20 * seed % 256, 90, 200))
    image.paste((255, 255, 0), (5, 5, 15, 15))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def make_archive(top="IJCAI2019_data/", folders=tuple(IMAGES), extra=()):
    """Zip bytes: `<top><folder>/<id>.jpg` for the given folders, the sentiment text the real archive also holds,
    a Mac resource-fork folder, and `extra` (name, bytes) members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(top + "twitter2017/train.tsv", "index\tlabel\n")
        for folder in folders:
            archive.writestr(f"{top}{folder}/", "")
            for i, img_id in enumerate(IMAGES[folder]):
                archive.writestr(f"{top}{folder}/{img_id}.jpg", jpeg(i))
                archive.writestr(f"__MACOSX/{top}{folder}/._{img_id}.jpg", b"resource fork")
        for name, data in extra:
            archive.writestr(name, data)
    return buffer.getvalue()


def served(server, name, path):
    """Data set `name` with its archive served from `path` on the local server."""
    dataset = downloads.DATASETS[name]
    archive = dataclasses.replace(dataset.images, url=server + path, page="https://example.invalid/archive-page")
    return dataclasses.replace(dataset, images=archive)


def assert_images(folder, archive_folder):
    expected = IMAGES[archive_folder]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.jpg" for i in expected)
    for i, img_id in enumerate(expected):
        assert (folder / f"{img_id}.jpg").read_bytes() == jpeg(i)
        with Image.open(folder / f"{img_id}.jpg") as image:
            assert image.size == (40 + i, 30)


@pytest.mark.parametrize("top", ["IJCAI2019_data/", ""], ids=["under-top-folder", "flat"])
@pytest.mark.parametrize("name, img_dir", [("twitter2017", "twitter2017_images"), ("twitter2015", "ner_img")])
def test_fetch_images_extracts_only_the_data_sets_folder(server, tmp_path, top, name, img_dir):
    FILES[f"/archive/{top}IJCAI2019_data.zip"] = make_archive(top)
    dataset = served(server, name, f"/archive/{top}IJCAI2019_data.zip")
    data_dir = tmp_path / "data"
    got = downloads.fetch_images(dataset, str(data_dir), quiet=True)
    assert got == str(data_dir / img_dir)
    assert_images(data_dir / img_dir, dataset.archive_folder)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(["IJCAI2019_data.zip", img_dir])  # nothing else
    assert oct((data_dir / img_dir).stat().st_mode & 0o777) == oct(0o755)


def test_a_complete_archive_on_disk_is_reused_and_a_present_folder_is_kept(server, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "IJCAI2019_data.zip").write_bytes(make_archive())
    dataset = served(server, "twitter2017", "/not-there.zip")
    asked = len(REQUESTS)
    downloads.fetch_images(dataset, str(data_dir), offline=True)
    assert_images(data_dir / "twitter2017_images", "twitter2017_images")
    (data_dir / "IJCAI2019_data.zip").unlink()
    assert downloads.fetch_images(dataset, str(data_dir)) == str(data_dir / "twitter2017_images")
    assert len(REQUESTS) == asked  # nothing was downloaded


def test_an_incomplete_archive_on_disk_is_downloaded_again(server, tmp_path):
    FILES["/again/IJCAI2019_data.zip"] = whole = make_archive()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "IJCAI2019_data.zip").write_bytes(whole[:len(whole) // 2])  # an interrupted copy by hand
    downloads.fetch_images(served(server, "twitter2017", "/again/IJCAI2019_data.zip"), str(data_dir), quiet=True)
    assert (data_dir / "IJCAI2019_data.zip").read_bytes() == whole
    assert_images(data_dir / "twitter2017_images", "twitter2017_images")


@pytest.mark.parametrize("path", ["/cut/IJCAI2019_data.zip", "/half/IJCAI2019_data.zip"])
def test_a_cut_off_archive_is_refused_and_leaves_nothing(server, tmp_path, path):
    whole = make_archive()
    FILES["/half/IJCAI2019_data.zip"] = whole[:len(whole) // 2]  # a complete answer holding half an archive
    data_dir = tmp_path / "data"
    with pytest.raises(downloads.DownloadError) as err:
        downloads.fetch_images(served(server, "twitter2017", path), str(data_dir), quiet=True)
    message = str(err.value)
    assert f"Could not download {server}{path}" in message and str(data_dir / "IJCAI2019_data.zip") in message
    assert "https://example.invalid/archive-page" in message and str(data_dir / "twitter2017_images") in message
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.jpg", "IJCAI2019_data/twitter2017_images/../../../evil.jpg",
                                    "/tmp/evil.jpg", "IJCAI2019_data/twitter2017_images/..\\..\\evil.jpg"])
def test_an_archive_with_a_path_traversal_member_is_refused(tmp_path, member):
    data_dir = tmp_path / "a" / "b" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "IJCAI2019_data.zip").write_bytes(make_archive(extra=[(member, b"evil")]))
    with pytest.raises(downloads.DownloadError) as err:
        downloads.fetch_images(downloads.DATASETS["twitter2017"], str(data_dir), offline=True)
    assert f"unsafe member {member!r}" in str(err.value)
    assert sorted(p.name for p in data_dir.iterdir()) == ["IJCAI2019_data.zip"]
    assert [p for p in tmp_path.rglob("*evil*")] == []


def test_an_archive_without_the_folder_says_what_it_holds(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "IJCAI2019_data.zip").write_bytes(make_archive(folders=["twitter2015_images"]))
    with pytest.raises(downloads.DownloadError) as err:
        downloads.fetch_images(downloads.DATASETS["twitter2017"], str(data_dir), offline=True)
    message = str(err.value)
    assert "it has no folder twitter2017_images/ (its top-level entries: IJCAI2019_data, __MACOSX)" in message
    assert f"extract its folder twitter2017_images/ to {data_dir / 'twitter2017_images'}" in message
    assert sorted(p.name for p in data_dir.iterdir()) == ["IJCAI2019_data.zip"]


def test_an_interrupted_extraction_leaves_no_half_folder(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "IJCAI2019_data.zip").write_bytes(make_archive())
    copy, calls = downloads.shutil.copyfileobj, []

    def copy_then_interrupt(source, sink):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        copy(source, sink)
    monkeypatch.setattr(downloads.shutil, "copyfileobj", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        downloads.fetch_images(downloads.DATASETS["twitter2017"], str(data_dir), offline=True)
    assert sorted(p.name for p in data_dir.iterdir()) == ["IJCAI2019_data.zip"]  # no half folder, no staging

    monkeypatch.setattr(downloads.shutil, "copyfileobj", copy)
    downloads.fetch_images(downloads.DATASETS["twitter2017"], str(data_dir), offline=True)  # the next run completes
    assert_images(data_dir / "twitter2017_images", "twitter2017_images")


def test_offline_without_images_is_one_message_saying_where_to_put_them(tmp_path):
    data_dir = tmp_path / "data"
    asked = len(REQUESTS)
    with pytest.raises(downloads.DownloadError) as err:
        downloads.fetch_images(downloads.DATASETS["twitter2017"], str(data_dir), offline=True)
    image_dir, archive = data_dir / "twitter2017_images", data_dir / "IJCAI2019_data.zip"
    assert str(err.value) == (
        f"The images of twitter2017 are missing: {image_dir} does not exist and {archive} is not there either; "
        f"--offline forbids downloading it.\n  To fix: put the images in {image_dir}{os.sep} as <id>.jpg: download "
        f"IJCAI2019_data.zip from https://drive.google.com/file/d/1PpvvncnQkgDNeBMKVgG2zFYuRhbL873g/view, then "
        f"either save it as {archive} (the next run extracts it) or extract its folder twitter2017_images/ to "
        f"{image_dir}.")
    assert len(REQUESTS) == asked and not data_dir.exists()


# ----------------------------------------------------------------------------------------------------------------
# main.py: data sets, and fetching what is missing

@pytest.mark.parametrize("flags, expected", [
    ([], ("twitter2015", os.path.join(".", "data", "twitter2015"), "train", "dev", "test", "ner_img")),
    (["--dataset", "twitter2017"],
     ("twitter2017", os.path.join(".", "data", "twitter2017"), "train.txt", "valid.txt", "test.txt",
      "twitter2017_images")),
    (["--dataset", "twitter2015-umt", "--data_dir", "/d", "--dev_file", "mine", "--img_dir", "pics"],
     ("twitter2015-umt", "/d", "train.txt", "mine", "test.txt", "pics")),
])
def test_dataset_sets_the_defaults_and_explicit_flags_win(flags, expected):
    args = main.parse_args(["--do_train", *flags])
    assert (args.dataset, args.data_dir, args.train_file, args.dev_file, args.test_file, args.img_dir) == expected


def test_only_a_data_sets_own_split_files_have_a_download_location():
    umt2017 = downloads.DATASETS["twitter2017"]
    assert umt2017.file_url("valid.txt") == ("https://raw.githubusercontent.com/jefferyYu/UMT/master/data/twitter2017/"
                                             "valid.txt")
    assert downloads.DATASETS["twitter2015"].file_url("dev") == downloads.TWITTER2015_URL.format(file="dev")
    assert umt2017.file_url("dev") is None and umt2017.file_url("my_train.txt") is None


def changed_dataset(name, **changes):
    return dataclasses.replace(downloads.DATASETS[name], **changes)


def test_main_fetches_missing_files_on_first_run(server, tmp_path, monkeypatch):
    splits = {"train": make_tweets(20, 1), "dev": make_tweets(6, 2), "test": make_tweets(6, 3)}
    for name, tweets in splits.items():
        FILES[f"/data/{name}"] = write_conll(tmp_path / f"served_{name}", tweets).read_bytes()
    vectors = "".join(f"{w} " + " ".join(["0.5"] * 8) + "\n" for w in ["the", "paris", "city"])
    FILES["/wordvec/word_vector_200d.vec"] = vectors.encode()
    features_path = tmp_path / "served.pt"
    torch.save({i: torch.rand(49, 512) for tweets in splits.values() for i, _ in tweets}, features_path)
    FILES["/features.pt"] = features_path.read_bytes()
    monkeypatch.setitem(downloads.DATASETS, "twitter2015", changed_dataset(
        "twitter2015", text_url=server + "/data/{file}", feature_url=server + "/features.pt"))
    monkeypatch.setattr(downloads, "WORD_VECTORS_URL", server + "/wordvec/word_vector_200d.vec")

    flags = [f for f in SMALL_MODEL if f not in ("--no_w2v", "--offline")]
    args = ["--data_dir", str(tmp_path / "data"), "--model_dir", str(tmp_path / "model"),
            "--wordvec_dir", str(tmp_path / "wordvec"), "--do_train", *flags]
    assert main.main(args) == 0
    for name in ("train", "dev", "test"):
        assert (tmp_path / "data" / name).read_bytes() == FILES[f"/data/{name}"]
    assert (tmp_path / "data" / "img_vgg_features.pt").read_bytes() == FILES["/features.pt"]
    assert (tmp_path / "wordvec" / "word_vector_200d.vec").read_text() == vectors


def test_main_fetches_twitter2017_into_its_own_folder(server, tmp_path, monkeypatch):
    files = {"train.txt": make_tweets(20, 4), "valid.txt": make_tweets(6, 5), "test.txt": make_tweets(6, 6)}
    for name, tweets in files.items():
        FILES[f"/umt/twitter2017/{name}"] = write_conll(tmp_path / f"served_{name}", tweets).read_bytes()
    monkeypatch.setitem(downloads.DATASETS, "twitter2017", changed_dataset(
        "twitter2017", text_url=server + "/umt/twitter2017/{file}"))
    monkeypatch.chdir(tmp_path)  # the default --data_dir is ./data/twitter2017
    flags = [f for f in SMALL_MODEL if f != "--offline"]
    assert main.main(["--dataset", "twitter2017", "--do_train", "--no_img", *flags]) == 0
    for name in files:
        assert (tmp_path / "data" / "twitter2017" / name).read_bytes() == FILES[f"/umt/twitter2017/{name}"]


def test_missing_features_without_a_public_copy_is_one_message(server, tmp_path, capsys):
    data_dir = tmp_path / "d17"
    data_dir.mkdir()
    for name, seed in [("train.txt", 1), ("valid.txt", 2), ("test.txt", 3)]:
        write_conll(data_dir / name, make_tweets(10, seed))
    asked = len(REQUESTS)
    flags = [f for f in SMALL_MODEL if f != "--offline"]
    assert main.main(["--dataset", "twitter2017", "--data_dir", str(data_dir), "--model_dir", str(tmp_path / "m"),
                      "--do_train", *flags]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {data_dir / 'img_vgg_features.pt'} is missing and has no public copy to download.\n"
                   f"  To fix: extract features from the images with `python save_vgg_feature.py --dataset "
                   f"twitter2017 --data_dir {data_dir}`, or train text-only with --no_img\n")
    assert len(REQUESTS) == asked


def test_main_offline_failure_is_one_clear_message(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(downloads.DATASETS, "twitter2015", changed_dataset(
        "twitter2015", text_url=server + "/absent/{file}"))
    assert main.main(["--data_dir", str(tmp_path / "data"), "--model_dir", str(tmp_path / "model"), "--do_train",
                      "--no_w2v"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Could not download {server}/absent/train")
    assert f"to {tmp_path / 'data' / 'train'}" in err and "--data_dir" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "train").exists()
    assert glob.glob(str(tmp_path / "data" / "*")) == []


def test_extractor_downloads_the_archive_and_extracts_twitter2017(server, tmp_path, monkeypatch, capsys):
    """save_vgg_feature.py --dataset twitter2017 on an empty folder: the three text files and the archive come from
    the (local) server, only twitter2017_images/ is extracted, and every id of the three files gets a feature or a
    listed failure."""
    FILES["/archive/umt.zip"] = make_archive()
    ids = IMAGES["twitter2017_images"] + ["17_06_99999"]  # the last has no image in the archive
    for name, chunk in (("train.txt", ids[:2]), ("valid.txt", ids[2:3]), ("test.txt", ids[3:])):
        text = write_conll(tmp_path / f"served_{name}", [(img_id, [("x", "O")]) for img_id in chunk])
        FILES[f"/text2017/{name}"] = text.read_bytes()
    monkeypatch.setitem(downloads.DATASETS, "twitter2017", dataclasses.replace(
        served(server, "twitter2017", "/archive/umt.zip"), text_url=server + "/text2017/{file}"))
    data_dir = tmp_path / "data"
    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pth"
    torch.save(vgg.VGG16Features().state_dict(), weights)
    assert save_vgg_feature.main(["--dataset", "twitter2017", "--data_dir", str(data_dir), "--vgg_weights", str(weights),
                     "--workers", "0"]) == 0
    assert_images(data_dir / "twitter2017_images", "twitter2017_images")
    assert not (data_dir / "twitter2015_images").exists()
    saved, _ = image_features.read_features(data_dir / "img_vgg_features.pt")
    assert sorted(saved) == sorted(IMAGES["twitter2017_images"])
    failures = (data_dir / "img_vgg_features.pt.failures.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in failures] == ["17_06_99999"]
    assert "Wrote 3 features" in capsys.readouterr().out
    for name in ("train.txt", "valid.txt", "test.txt"):
        assert (data_dir / name).read_bytes() == FILES[f"/text2017/{name}"]


def test_extractor_offline_without_the_text_names_the_file(tmp_path, capsys):
    assert save_vgg_feature.main(["--dataset", "twitter2017", "--data_dir", str(tmp_path / "d"), "--offline"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'd' / 'train.txt'} is missing and --offline forbids downloading it from" in err
    assert "jefferyYu/UMT" in err and "Traceback" not in err


def test_extractor_offline_without_images_says_where_to_put_them(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        write_conll(data_dir / name, [("17_06_12483", [("x", "O")])])
    weights = tmp_path / "vgg16.pth"
    torch.save(vgg.VGG16Features().state_dict(), weights)
    assert save_vgg_feature.main(["--dataset", "twitter2017", "--data_dir", str(data_dir), "--vgg_weights", str(weights),
                     "--offline"]) == 2
    err = capsys.readouterr().err
    assert f"{data_dir / 'twitter2017_images'} does not exist" in err and "IJCAI2019_data.zip" in err
