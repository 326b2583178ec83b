"""Tagging raw tweets with a trained model: a JSONL file (or --text) in, one JSON line per tweet out, the images'
features made on the fly by the pipeline that made the training features."""
import json

import pytest
import torch
from PIL import Image

import image_features
import downloads
import main
import model
import raw_tweets
import vgg
from conftest import run_main


@pytest.fixture
def trained(tmp_path, tiny_data):
    """A model trained on features whose provenance record names a random-weight VGG16 checkpoint."""
    data_dir, splits = tiny_data
    weights = random_vgg_weights(tmp_path / "vgg16.pth")
    features = torch.load(data_dir / "img_vgg_features.pt", weights_only=True)
    features[image_features.PROVENANCE_KEY] = {"mode": "torchvision", "weights_file": "vgg16.pth",
                                     "weights_sha256": downloads.sha256_of(weights), "dtype": "float32"}
    torch.save(features, data_dir / "img_vgg_features.pt")
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 0
    return tmp_path, data_dir, str(weights)


def random_vgg_weights(path):
    torch.manual_seed(3)
    torch.save(vgg.VGG16Features().state_dict(), path)
    return path


def features_seen_by_the_model(monkeypatch):
    """A list that receives, at each trainer.predict, the feature row the model gets for tweet id "1"."""
    seen = []
    real_predict = main.trainer.predict

    def spy(model, examples, num_tweets, vocab, features, *rest):
        seen.append(features.gather(features.rows(["1"])))
        return real_predict(model, examples, num_tweets, vocab, features, *rest)

    monkeypatch.setattr(main.trainer, "predict", spy)
    return seen


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
                            for line in lines), encoding="utf-8")
    return path


def predict(tmp_path, data_dir, *flags):
    return main.main(["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), "--do_predict",
                      "--no_progress", "--offline", *flags])


def test_jsonl_of_raw_tweets_one_line_out_per_tweet(trained, capsys):
    tmp_path, data_dir, weights = trained
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(tmp_path / "pics" / "red.jpg")
    Image.new("RGB", (120, 240), (30, 30, 200)).save(tmp_path / "pics" / "blue.png")
    lines = [
        {"id": "a", "text": "Obama in Paris 🇫🇷 today http://t.co/x1 @friend #fun", "image": "pics/red.jpg"},
        {"id": "b", "text": "Messi ❤️ Texas café naïve 東京 👨‍👩‍👧", "image": "pics/blue.png"},
        {"id": "c", "text": "no picture with Beyonce"},
        {"id": "d", "text": ""},
        {"id": "e", "text": "Boston City is big", "image": "pics/missing.jpg"},
        "this line is not JSON",
        {"id": "g", "text": 42},
        {"text": "Taylor   in  London City"},
    ]
    path = write_jsonl(tmp_path / "tweets.jsonl", lines)
    assert predict(tmp_path, data_dir, "--pred_file", str(path), "--vgg_weights", weights) == 2  # two bad lines
    err = capsys.readouterr().err
    assert f"{path}:6: not valid JSON" in err and f"{path}:7: the object has a `text` that is number" in err
    assert "2 lines of" in err and "the other 6 tweets were tagged" in err

    out = [json.loads(line) for line in (tmp_path / "model" / "tweets.jsonl.predicted.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == ["a", "b", "c", "d", "e", "8"]  # every good line, in order; id 8 = line 8
    by_id = {o["id"]: o for o in out}
    for o, line in zip(out, [lines[i] for i in (0, 1, 2, 3, 4, 7)]):
        assert o["text"] == line["text"] and len(o["tags"]) == len(o["tokens"]) == len(o["spans"])
        assert all(line["text"][start:end] == token for token, (start, end) in zip(o["tokens"], o["spans"]))
        assert all(line["text"][e["start"]:e["end"]] == e["text"] for e in o["entities"])
    assert by_id["a"]["tokens"][:3] == ["Obama", "in", "Paris"] and "http://t.co/x1" in by_id["a"]["tokens"]
    assert by_id["d"]["tokens"] == [] and by_id["d"]["entities"] == []
    assert [by_id[i]["image_feature"] for i in "abcde"] == ["image", "image", "zero", "zero", "zero"]
    assert by_id["c"]["zero_feature_reason"] == "no image given"
    assert by_id["e"]["zero_feature_reason"].startswith("image not usable: missing")


def test_the_image_changes_the_prediction_input(trained, monkeypatch):
    """The extracted features are the ones the model sees: a tweet with an image gets that image's feature row."""
    tmp_path, data_dir, weights = trained
    Image.new("RGB", (64, 64), (250, 250, 0)).save(tmp_path / "yellow.jpg")
    seen = features_seen_by_the_model(monkeypatch)
    assert predict(tmp_path, data_dir, "--text", "Obama in Paris", "--image", str(tmp_path / "yellow.jpg"),
                   "--vgg_weights", weights) == 0
    extractor = vgg.extractor_from_provenance(
        {"mode": "torchvision", "weights_file": "vgg16.pth", "weights_sha256": downloads.sha256_of(weights),
         "dtype": "float32"}, weights)
    expected, _ = extractor.features([str(tmp_path / "yellow.jpg")])
    torch.testing.assert_close(seen[0][0], expected[str(tmp_path / "yellow.jpg")])


def test_text_flag_prints_one_json_line(trained, capsys):
    tmp_path, data_dir, weights = trained
    assert predict(tmp_path, data_dir, "--text", "Messi  in Boston City 😀") == 0  # no image: no weights needed
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    result = json.loads(printed[0])
    assert result["tokens"] == ["Messi", "in", "Boston", "City", "😀"] and result["image_feature"] == "zero"
    assert result["spans"][2] == [10, 16]  # "Messi  in " is 10 characters


def test_images_without_a_provenance_record_say_what_to_do(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data  # features without a record, as the published file
    run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1")
    Image.new("RGB", (64, 64)).save(tmp_path / "x.jpg")
    assert predict(tmp_path, data_dir, "--text", "Obama", "--image", str(tmp_path / "x.jpg")) == 2
    err = capsys.readouterr().err
    assert "no provenance record" in err and "--image_pipeline seed" in err


def test_image_pipeline_states_how_recordless_features_were_made(tmp_path, tiny_data, monkeypatch, capsys, caplog):
    """A model trained on features without a record (as the published file) tags raw tweets with images once the
    user states the pipeline; the features it sees are that pipeline's."""
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1")
    weights = random_vgg_weights(tmp_path / "vgg16.pth")
    Image.new("RGB", (64, 64), (10, 120, 250)).save(tmp_path / "x.jpg")
    seen = features_seen_by_the_model(monkeypatch)
    image = ["--text", "Obama in Paris", "--image", str(tmp_path / "x.jpg"), "--vgg_weights", str(weights)]
    assert predict(tmp_path, data_dir, *image, "--image_pipeline", "seed") == 0
    assert json.loads(capsys.readouterr().out)["image_feature"] == "image"
    assert "is not torchvision's vgg16-397923af.pth" in caplog.text  # random weights: said, not refused
    record = {"mode": "seed", "weights_file": "vgg16.pth", "weights_sha256": downloads.sha256_of(weights),
              "dtype": "float32"}
    expected, _ = vgg.extractor_from_provenance(record, str(weights)).features([str(tmp_path / "x.jpg")])
    torch.testing.assert_close(seen[0][0], expected[str(tmp_path / "x.jpg")])
    other, _ = vgg.extractor_from_provenance({**record, "mode": "torchvision"}, str(weights)).features(
        [str(tmp_path / "x.jpg")])
    assert not torch.allclose(seen[0][0], other[str(tmp_path / "x.jpg")])  # the stated mode is the one used
    assert predict(tmp_path, data_dir, *image, "--image_pipeline", "caffe") == 2  # torchvision-style weights
    assert "--preprocess caffe needs Caffe-converted VGG16 weights" in capsys.readouterr().err


def test_image_pipeline_may_not_contradict_the_record(trained, capsys):
    tmp_path, data_dir, weights = trained  # its record says torchvision
    Image.new("RGB", (64, 64)).save(tmp_path / "x.jpg")
    image = ["--text", "Obama", "--image", str(tmp_path / "x.jpg"), "--vgg_weights", weights]
    assert predict(tmp_path, data_dir, *image, "--image_pipeline", "seed") == 2
    assert "made with --preprocess torchvision (their provenance record), not seed" in capsys.readouterr().err
    assert predict(tmp_path, data_dir, *image, "--image_pipeline", "torchvision") == 0
    capsys.readouterr()
    for flags in (["--do_train"], ["--do_predict", "--pred_file", str(data_dir / "test")]):  # no raw tweets
        with pytest.raises(SystemExit):
            main.parse_args([*flags, "--image_pipeline", "seed"])
        assert "--image_pipeline goes with --do_predict on raw tweets" in capsys.readouterr().err


def test_offline_without_the_weights_names_the_flag(trained, capsys):
    tmp_path, data_dir, _ = trained
    Image.new("RGB", (64, 64)).save(tmp_path / "x.jpg")
    assert predict(tmp_path, data_dir, "--text", "Obama", "--image", str(tmp_path / "x.jpg")) == 2
    assert "pass --vgg_weights PATH to vgg16.pth" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# One line that cannot be tagged fails alone

def runs_out_of_memory_above(monkeypatch, tokens, error):
    """Decoding a batch that holds a tweet of more than `tokens` tokens raises `error`, as a 1 MB line made torch's
    allocator do ("tried to allocate 102400000000 bytes")."""
    real_decode = model.ACN.decode

    def decode(self, batch):
        if batch.word_mask.sum(dim=1).max() > tokens:
            raise error
        return real_decode(self, batch)
    monkeypatch.setattr(model.ACN, "decode", decode)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
                 "allocate 102400000000 bytes."),
    MemoryError()], ids=["torch", "python"])
def test_a_tweet_that_runs_out_of_memory_fails_alone(trained, monkeypatch, capsys, error):
    tmp_path, data_dir, _ = trained
    runs_out_of_memory_above(monkeypatch, 100, error)
    lines = [{"id": "a", "text": "Messi in Paris"}, {"id": "huge", "text": "Obama " * 5_000},
             {"id": "c", "text": "Boston City"}]
    path = write_jsonl(tmp_path / "tweets.jsonl", lines)
    assert predict(tmp_path, data_dir, "--pred_file", str(path)) == 2  # the three tweets are one batch
    err = capsys.readouterr().err
    assert (f"{path}:2: this tweet of 5,000 tokens could not be tagged: memory ran out. Split it into shorter "
            f"tweets, or tag it on a machine with more memory.") in err
    assert f"1 line of {path} was skipped (above); the other 2 tweets were tagged" in err
    written = (tmp_path / "model" / "tweets.jsonl.predicted.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in written] == ["a", "c"]
    assert predict(tmp_path, data_dir, "--text", "Obama " * 200) == 2
    assert "--text: this tweet of 200 tokens could not be tagged" in capsys.readouterr().err


def test_other_errors_of_the_model_are_not_taken_for_memory(trained, monkeypatch):
    tmp_path, data_dir, _ = trained
    runs_out_of_memory_above(monkeypatch, 0, RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    path = write_jsonl(tmp_path / "tweets.jsonl", [{"text": "Messi in Paris"}])
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        predict(tmp_path, data_dir, "--pred_file", str(path))


def test_text_that_cannot_be_written_is_one_bad_line(trained, capsys):
    """A lone surrogate used to tag every line and then fail writing them all; U+2028 and co. are escaped."""
    tmp_path, data_dir, _ = trained
    path = tmp_path / "tweets.jsonl"
    path.write_text('{"id": "a", "text": "Messi\\u2028in Paris\\u0085"}\n{"id": "b", "text": "half \\ud800"}\n'
                    '{"id": "c", "text": "Boston"}\n', encoding="utf-8")
    assert predict(tmp_path, data_dir, "--pred_file", str(path)) == 2
    assert f"{path}:2: `text` holds a lone surrogate" in capsys.readouterr().err
    written = (tmp_path / "model" / "tweets.jsonl.predicted.jsonl").read_text(encoding="utf-8")
    assert [json.loads(line)["text"] for line in written.splitlines()] == ["Messi\u2028in Paris\u0085", "Boston"]
    output = tmp_path / "one.jsonl"
    for flags in ([], ["--pred_output", str(output)]):
        assert predict(tmp_path, data_dir, "--text", "caf\udce9 in Paris", *flags) == 2  # argv byte 0xe9 (Latin-1)
        captured = capsys.readouterr()
        assert captured.out == "" and "--text: byte 0xe9 at character 3 is not UTF-8" in captured.err
    assert not output.exists()


# ----------------------------------------------------------------------------------------------------------------
# Text-only models and attention maps

def test_text_only_model_says_so_and_refuses_attention_maps(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1", "--no_img") == 0
    assert predict(tmp_path, data_dir, "--text", "Messi in Paris") == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["image_feature"], result["zero_feature_reason"]) == ("none", raw_tweets.TEXT_ONLY)
    checkpoint = tmp_path / "model" / "model.pt"
    for given in (["--text", "Messi in Paris"], ["--pred_file", str(data_dir / "test")]):
        assert predict(tmp_path, data_dir, *given, "--save_attention") == 2
        assert capsys.readouterr().err == (f"error: --save_attention: {checkpoint} is a text-only model (trained "
                                           f"with --no_img), which has no visual attention to draw. Drop "
                                           f"--save_attention.\n")


def test_text_flag_draws_the_attention_of_an_image_model(trained, capsys):
    tmp_path, data_dir, _ = trained
    assert predict(tmp_path, data_dir, "--text", "Messi in Paris", "--save_attention") == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == ["Messi", "in", "Paris"]
    assert [p.name for p in (tmp_path / "model" / "attention").iterdir()] == ["0_1.png"]
