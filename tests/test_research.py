"""Research workflow: multi-seed summaries, training curves, attention maps."""
import json
import re
import shutil
import statistics

import numpy as np
import pytest
from PIL import Image

import flags
import main
import model
import plots
import predict
import results as seed_results
import utils
from conftest import run_main, write_conll


def fake_metrics(f1, per_type):
    split = {"precision": f1 + 0.01, "recall": f1 - 0.01, "f1": f1,
             "per_type": {name: {"f1": value} for name, value in per_type.items()}}
    return {"best_epoch": 2, "wall_seconds": 10.0, "dev": split, "test": split}


def test_seed_summary_arithmetic_and_table():
    rows = [seed_results.seed_row(seed, fake_metrics(f1, {"PER": f1 + 0.1, "MISC": f1 - 0.1}))
            for seed, f1 in ((7, 0.5), (8, 0.6), (11, 0.7))]
    results = seed_results.summarise_seeds([7, 8, 11], rows, {"hidden_dim": 16, "optimizer": "adam"})
    assert results["summary"]["test_f1"]["mean"] == pytest.approx(0.6)
    assert results["summary"]["test_f1"]["std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))
    assert results["summary"]["test_f1_MISC"]["mean"] == pytest.approx(0.5)
    table = seed_results.results_markdown(results, flags.flag_defaults).splitlines()
    assert table[0].startswith("| seed |") and [line.split(" | ")[0] for line in table[2:5]] == ["| 7", "| 8", "| 11"]
    assert table[5].startswith("| mean +- std |") and table[5].endswith("| 60.00 +- 10.00 |")
    assert "| MISC | PER |" in table and "| 50.00 +- 10.00 | 70.00 +- 10.00 |" in table
    assert '"hidden_dim": 16' in table[-1] and '"optimizer"' not in table[-1]  # only settings off their default


def test_seed_table_compares_settings_with_the_defaults_of_their_dataset():
    rows = [seed_results.seed_row(seed, fake_metrics(0.5, {"MISC": 0.4})) for seed in (7, 8)]
    config = {"dataset": "twitter2017", "train_file": "train.txt", "dev_file": "valid.txt", "test_file": "test.txt",
              "img_dir": "twitter2017_images", "data_dir": "/elsewhere", "seed": 7}
    table = seed_results.results_markdown(seed_results.summarise_seeds([7, 8], rows, config), flags.flag_defaults)
    last_line = table.splitlines()[-1]
    assert last_line.startswith("Data set twitter2017;") and '"data_dir": "/elsewhere"' in last_line
    for name in ("train_file", "dev_file", "test_file", "img_dir"):  # the data set's own names are its defaults
        assert f'"{name}"' not in last_line


def test_seeds_train_each_seed_into_its_folder(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--seeds", "7,8", "--num_train_epochs", "1") == 0
    model_dir = tmp_path / "model"
    results = json.loads((model_dir / "results.json").read_text())
    assert [r["seed"] for r in results["per_seed"]] == [7, 8]
    for r in results["per_seed"]:
        metrics = json.loads((model_dir / f"seed_{r['seed']}" / "metrics.json").read_text())
        assert r["test_f1"] == metrics["test"]["f1"] and r["dev_recall"] == metrics["dev"]["recall"]
        assert json.loads((model_dir / f"seed_{r['seed']}" / "config.json").read_text())["seed"] == r["seed"]
    assert (model_dir / "results.md").read_text() == seed_results.results_markdown(results, flags.flag_defaults)


def test_summarise_gives_what_seeds_gives_for_runs_made_apart(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    assert run_main(tmp_path / "together", data_dir, "--do_train", "--do_eval", "--seeds", "7,8",
                    "--num_train_epochs", "1") == 0
    for seed in ("8", "7"):  # in another order, each in its own folder, as parallel jobs would
        assert run_main(tmp_path / f"apart_{seed}", data_dir, "--do_train", "--do_eval", "--seed", seed,
                        "--num_train_epochs", "1", "--threads", "1") == 0
    runs = [str(tmp_path / f"apart_{seed}" / "model") for seed in ("7", "8")]
    assert main.main(["--summarise", *runs, "--model_dir", str(tmp_path / "summary")]) == 0
    together = json.loads((tmp_path / "together" / "model" / "results.json").read_text())
    apart = json.loads((tmp_path / "summary" / "results.json").read_text())
    assert apart["seeds"] == [7, 8]
    drop_wall = [{k: v for k, v in row.items() if k != "wall_seconds"} for row in together["per_seed"]]
    assert [{k: v for k, v in row.items() if k != "wall_seconds"} for row in apart["per_seed"]] == drop_wall
    assert apart["summary"] == together["summary"]  # the same numbers, so the same mean and std
    assert apart["configuration"] == {**together["configuration"], "model_dir": str(tmp_path / "summary")}

    def comparable(text, model_dir):  # the tables and the settings line, but the wall time and the output folder
        return re.sub(r"wall time per seed \d+ s", "", text).replace(model_dir, "OUT")

    together_dir = tmp_path / "together" / "model"
    assert (comparable((tmp_path / "summary" / "results.md").read_text(), str(tmp_path / "summary")) ==
            comparable((together_dir / "results.md").read_text(), str(together_dir)))


def test_summarise_refuses_runs_of_other_settings_unfinished_runs_and_repeated_seeds(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    for name, extra in (("a", []), ("b", ["--seed", "8", "--hidden_dim", "8"]), ("c", ["--seed", "9"]), ("d", [])):
        assert run_main(tmp_path / name, data_dir, "--do_train", "--do_eval", "--num_train_epochs", "1", *extra) == 0
    a, b, c, d = (str(tmp_path / name / "model") for name in "abcd")
    out = str(tmp_path / "summary")
    assert main.main(["--summarise", a, b, "--model_dir", out]) == 2
    err = capsys.readouterr().err
    assert f"{b} was run with other settings than {a}" in err and "hidden_dim: 16 vs 8" in err
    assert main.main(["--summarise", a, d, "--model_dir", out]) == 2
    assert "two runs have the same seed ([7, 7])" in capsys.readouterr().err
    assert main.main(["--summarise", a, a + "/", "--model_dir", out]) == 2
    assert f"{a}/ is given twice" in capsys.readouterr().err
    metrics_path = tmp_path / "c" / "model" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["test"]  # as a run stopped before its evaluation leaves it
    metrics_path.write_text(json.dumps(metrics))
    assert main.main(["--summarise", a, c, "--model_dir", out]) == 2
    assert f"{c}: has no test scores" in capsys.readouterr().err
    assert main.main(["--summarise", a, str(tmp_path), "--model_dir", out]) == 2
    assert "config.json: no such file" in capsys.readouterr().err
    with utils.folder_lock(c):  # as a run still training holds its folder
        assert main.main(["--summarise", a, c, "--model_dir", out]) == 2
    assert f"{c} is in use by another run" in capsys.readouterr().err
    assert not (tmp_path / "summary").exists()  # nothing written from a refused summary
    for argv in (["--summarise", a, "--do_train", "--model_dir", out], ["--summarise", a]):
        with pytest.raises(SystemExit):
            main.parse_args(argv)
    assert "--summarise needs --model_dir" in capsys.readouterr().err


def test_summarise_compares_what_the_folders_held_not_where_they_are(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    elsewhere = tmp_path / "copy"
    shutil.copytree(data_dir, elsewhere)  # the same data in another folder, as on another machine
    assert run_main(tmp_path / "a", data_dir, "--do_train", "--do_eval", "--num_train_epochs", "1") == 0
    assert run_main(tmp_path / "b", elsewhere, "--do_train", "--do_eval", "--num_train_epochs", "1", "--seed", "8") == 0
    runs = [str(tmp_path / name / "model") for name in "ab"]
    assert main.main(["--summarise", *runs, "--model_dir", str(tmp_path / "summary")]) == 0
    with open(elsewhere / "train", "a", encoding="utf-8") as f:  # now other data in that folder
        f.write("IMGID:extra\nParis\tB-LOC\n\n")
    assert run_main(tmp_path / "c", elsewhere, "--do_train", "--do_eval", "--num_train_epochs", "1", "--seed", "9") == 0
    assert main.main(["--summarise", runs[0], str(tmp_path / "c" / "model"), "--model_dir", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err
    assert "data: " in err and "'tweets': 40" in err and "'tweets': 41" in err


def test_training_curve_draws_the_history(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--logging_steps", "2")
    history = json.loads((tmp_path / "model" / "metrics.json").read_text())["history"]
    figure = plots.training_curve_figure(history)
    loss_line, f1_line = figure.axes[0].lines[0], figure.axes[1].lines[0]
    assert list(loss_line.get_xdata()) == [h["epoch"] for h in history]  # fractional epochs of --logging_steps too
    assert list(loss_line.get_ydata()) == [h["train_loss"] for h in history]
    assert list(f1_line.get_ydata()) == [100 * h["dev_f1"] for h in history]
    assert (tmp_path / "model" / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("attention", ["additive", "concat"])
def test_attention_maps_over_image_and_alone(tmp_path, tiny_data, attention):
    data_dir, splits = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1", "--attention", attention)
    (data_dir / "ner_img").mkdir()
    first_id = splits["test"][0][0]
    Image.new("RGB", (300, 200), (10, 200, 30)).save(data_dir / "ner_img" / f"{first_id}.jpg")
    assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(data_dir / "test"), "--save_attention",
                    "--attention_limit", "3", "--attention", attention) == 0
    pngs = sorted((tmp_path / "model" / "attention").iterdir())
    assert len(pngs) == 3
    for png in pngs:
        index = int(png.name.split("_")[0])
        img_id, tokens = splits["test"][index]
        assert png.name == f"{index}_{img_id}.png"
        with Image.open(png) as image:  # additive: a panel per word; concat: one panel, the same for every word
            assert image.size == plots.attention_figure_size(len(tokens) if attention == "additive" else 1)
    with Image.open(pngs[0]) as over_image:  # green image under the heat map of the first tweet
        rgb = np.asarray(over_image.convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert ((g > r + 40) & (g > b + 40)).sum() > 500


def test_attention_map_of_a_rotated_photo_is_drawn_upright(tmp_path, tiny_data, monkeypatch):
    """A photo whose EXIF says "rotate 90 degrees": the map is drawn over the upright image, as VGG16 saw it."""
    data_dir, splits = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1")
    (data_dir / "ner_img").mkdir()
    stored = Image.new("RGB", (300, 200), (255, 255, 255))
    stored.paste((10, 200, 30), (0, 0, 150, 200))  # stored: green left half; upright: green top half
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    stored.save(data_dir / "ner_img" / f"{splits['test'][0][0]}.jpg", exif=exif)
    drawn = []
    monkeypatch.setattr(plots, "plot_visual_attention", lambda words, alpha, path, image=None: drawn.append(image))
    assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(data_dir / "test"), "--save_attention",
                    "--attention_limit", "1") == 0
    upright = np.asarray(drawn[0]).astype(int)
    assert upright.shape == (300, 200, 3)
    assert upright[:140, :, 1].mean() > 190 and upright[160:, :, 0].mean() > 240  # green top, white bottom


def test_image_ids_never_become_paths(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1")
    tweets = [("../../../../tmp/x", [("Paris", "B-LOC")]), ("/etc/passwd", [("a", "O")]), ("..", [("b", "O")])]
    path = write_conll(tmp_path / "evil.txt", tweets)
    assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(path), "--save_attention") == 0
    names = sorted(p.name for p in (tmp_path / "model" / "attention").iterdir())
    assert names == ["0__.._.._.._tmp_x.png", "1__etc_passwd.png", "2_.png"]  # no `/`: each is a file in the folder
    assert predict.attention_file_name(3, "a/b\\c") == "3_a_b_c.png"


def test_ids_too_long_for_a_file_name_are_cut_and_told_apart(tmp_path, tiny_data):
    """A 300-character image id used to stop the remaining maps (a file name over the system's 255 bytes)."""
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1")
    long_ids = ["x" * 300, "x" * 299 + "y", "é" * 300]
    path = write_conll(tmp_path / "long_ids.txt", [(img_id, [("Paris", "B-LOC")]) for img_id in long_ids])
    assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(path), "--save_attention") == 0
    names = sorted(p.name for p in (tmp_path / "model" / "attention").iterdir())
    assert len(names) == 3 and all(len(name.encode()) <= predict.MAX_NAME for name in names)
    assert names[0].startswith("0_xxxx") and re.fullmatch(r"2__+-[0-9a-f]{12}\.png", names[2])
    assert predict.attention_file_name(7, "x" * 300) != predict.attention_file_name(7, "x" * 299 + "y")
    assert predict.attention_file_name(7, "x" * 190) == "7_" + "x" * 190 + ".png"  # short enough: as it was


def test_concat_attention_title_is_shown_whole_inside_the_figure():
    """The one panel of a concat map is 200 pixels wide: its title must fit, and a long word's title is cut to
    fit rather than run off the figure."""
    title = predict.concat_title(12345)
    for words, shown in (([title], title), (["W" * 30], None)):
        figure = plots.attention_figure(words, np.full((1, 49), 1 / 49))
        figure.canvas.draw()
        text = figure.axes[0].title
        box = text.get_window_extent(figure.canvas.get_renderer())
        assert 0 <= box.x0 and box.x1 <= figure.bbox.width and 0 <= box.y0 and box.y1 <= figure.bbox.height
        assert text.get_text() == shown if shown else text.get_text().endswith("…")


def test_attention_figure_size_grows_in_rows_of_six():
    assert plots.attention_figure_size(1) == (200, 200)
    assert plots.attention_figure_size(6) == (1200, 200)
    assert plots.attention_figure_size(13) == (1200, 600)


@pytest.mark.parametrize("flags, message", [
    (["--do_predict", "--pred_file", "x", "--save_attention", "--no_img"], "--save_attention needs --do_predict"),
    (["--do_train", "--seeds", "7,8"], "--seeds needs --do_train and --do_eval"),
])
def test_research_flag_combinations_checked(flags, message, capsys):
    with pytest.raises(SystemExit):
        main.parse_args(flags)
    assert message in capsys.readouterr().err


def test_a_tweet_of_a_file_that_runs_out_of_memory_fails_alone(tmp_path, tiny_data, monkeypatch, capsys):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1")
    real_decode = model.ACN.decode

    def decode(self, batch):  # as torch's allocator does on a tweet of a million words
        if batch.word_mask.sum(dim=1).max() > 100:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 102400000000 bytes.")
        return real_decode(self, batch)
    monkeypatch.setattr(model.ACN, "decode", decode)
    tweets = [("a", [("Paris", "B-LOC")]), ("huge", [("Obama", "B-PER")] * 500), ("c", [("Messi", "B-PER")])]
    path = write_conll(tmp_path / "new.txt", tweets)
    assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(path)) == 2
    assert (f"error: {path}:4: this tweet of 500 tokens could not be tagged: memory ran out"
            in capsys.readouterr().err)  # line 4: the IMGID line of the second tweet
    lines = (tmp_path / "model" / "new.txt.predicted").read_text().splitlines()
    assert [line for line in lines if line.startswith("IMGID:")] == ["IMGID:a", "IMGID:c"]
    metrics = json.loads((tmp_path / "model" / "new.txt.predicted.metrics.json").read_text())
    assert metrics["tweets"] == 2  # scored over the tweets that were tagged


def test_prediction_of_unknown_words_and_long_tweets(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train")
    long_tweet = [(f"never{i}seen", "O") for i in range(60)]
    path = write_conll(tmp_path / "new.txt", [("unknown_image", long_tweet)])
    assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(path)) == 0
    lines = (tmp_path / "model" / "new.txt.predicted").read_text().splitlines()
    assert lines[0] == "IMGID:unknown_image" and len(lines) == 1 + 60 + 1
