"""Downloads against a local HTTP server on 127.0.0.1: success, 404, a transfer cut off mid-way, an unusable file;
and main.py fetching what is missing on its first run."""
import http.server
import threading

import pytest
import torch

import main
import utils
from conftest import SMALL_MODEL, make_tweets, write_conll

FILES = {}  # path on the server -> bytes


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
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


def test_success_lands_only_the_final_file(server, tmp_path):
    FILES["/vectors.vec"] = b"cat 1 2 3\ndog 4 5 6\n"
    dest = tmp_path / "sub" / "vectors.vec"
    utils.download(server + "/vectors.vec", dest, check=utils.check_text_lines, quiet=True)
    assert dest.read_bytes() == FILES["/vectors.vec"]
    assert [p.name for p in dest.parent.iterdir()] == ["vectors.vec"]


@pytest.mark.parametrize("path, reason", [("/nope", "404"), ("/cut/big.pt", "incomplete"),
                                          ("/empty.vec", "the server sent an empty file"),
                                          ("/broken.pt", "not a complete torch file")])
def test_failures_leave_no_file_and_say_what_to_do(server, tmp_path, path, reason):
    FILES["/empty.vec"] = b""
    FILES["/broken.pt"] = b"PK\x03\x04 not really a zip"
    dest = tmp_path / "thing.pt"
    with pytest.raises(utils.DownloadError) as err:
        utils.download(server + path, dest, check=utils.check_torch_zip, avoid_hint="use --no_img", quiet=True)
    message = str(err.value)
    assert f"Could not download {server}{path}" in message and f"to {dest}" in message
    assert reason in message and "use --no_img" in message and "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


def test_main_fetches_missing_files_on_first_run(server, tmp_path, monkeypatch):
    splits = {"train": make_tweets(20, 1), "dev": make_tweets(6, 2), "test": make_tweets(6, 3)}
    for name, tweets in splits.items():
        FILES[f"/data/{name}"] = write_conll(tmp_path / f"served_{name}", tweets).read_bytes()
    vectors = "".join(f"{w} " + " ".join(["0.5"] * 8) + "\n" for w in ["the", "paris", "city"])
    FILES["/wordvec/word_vector_200d.vec"] = vectors.encode()
    features_path = tmp_path / "served.pt"
    torch.save({i: torch.rand(49, 512) for tweets in splits.values() for i, _ in tweets}, features_path)
    FILES["/features.pt"] = features_path.read_bytes()
    monkeypatch.setattr(utils, "TWITTER2015_URL", server + "/data/{split}")
    monkeypatch.setattr(utils, "WORD_VECTORS_URL", server + "/wordvec/word_vector_200d.vec")
    monkeypatch.setattr(utils, "VGG_FEATURES_URL", server + "/features.pt")

    flags = [f for f in SMALL_MODEL if f not in ("--no_w2v", "--offline")]
    args = ["--data_dir", str(tmp_path / "data"), "--model_dir", str(tmp_path / "model"),
            "--wordvec_dir", str(tmp_path / "wordvec"), "--do_train", *flags]
    assert main.main(args) == 0
    for name in ("train", "dev", "test"):
        assert (tmp_path / "data" / name).read_bytes() == FILES[f"/data/{name}"]
    assert (tmp_path / "data" / "img_vgg_features.pt").read_bytes() == FILES["/features.pt"]
    assert (tmp_path / "wordvec" / "word_vector_200d.vec").read_text() == vectors


def test_main_offline_failure_is_one_clear_message(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(utils, "TWITTER2015_URL", server + "/absent/{split}")
    assert main.main(["--data_dir", str(tmp_path / "data"), "--do_train", "--no_w2v"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Could not download {server}/absent/train")
    assert f"to {tmp_path / 'data' / 'train'}" in err and "--data_dir" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "train").exists()
