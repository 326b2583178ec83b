"""bench.py --baseline_dir (compare.py): the table it prints, and its two workers run as the comparison runs them,
on small data."""
import os

import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_comparison_table_gives_each_checkouts_medians_and_speed_up(monkeypatch):
    speed = {"/old": 1.0, "/new": 2.0}  # the new checkout twice as fast at everything

    def training(code_dir, data_dir, architecture, steps, threads):
        return {"tweets_per_s": speed[code_dir] * (100 if architecture == "paper" else 25),
                "cpu_tweets_per_s": speed[code_dir] * 50, "load": 1.5}

    def full_run(code_dir, data_dir, model_dir, threads):
        metrics = {"peak_anonymous_memory_gb": 0.5 / speed[code_dir], "dev": {"f1": 0.5}, "test": {"f1": 0.6}}
        return {"wall": 100 / speed[code_dir], "training": 60 / speed[code_dir], "metrics": metrics, "load": 2.5}

    monkeypatch.setattr(compare, "training_throughput", training)
    monkeypatch.setattr(compare, "full_run", full_run)
    monkeypatch.setattr(compare, "data_folder", lambda code_dir, work_dir: os.path.join(
        work_dir, "float16" if code_dir == "/new" else compare.PER_IMAGE_FOLDER))
    rows = dict(compare.compare([("base", "/old"), ("now", "/new")], "work", steps=10, rounds=3, threads=1))
    assert rows["feature layout each checkout reads (the one its save_vgg_feature.py writes)"] == \
        "base per-image, now stacked"
    assert rows["training throughput, paper (tweets/s, batch 16, Adam)"] == "base 100.00, now 200.00 (2.00x)"
    assert rows["now: authors' throughput / paper's"] == "0.25"
    assert rows["same: everything else (s): start-up, data, evaluations, outputs"] == "base 40.00, now 20.00 (2.00x)"
    assert rows["same: peak anonymous memory (GB)"] == "base 0.50, now 0.25 (2.00x)"
    assert rows["load average (1 min) during the measurements"] == "1.5-2.5"


def test_workers_measure_training_and_the_full_run_of_a_checkout(tiny_data, tmp_path):
    data_dir, _ = tiny_data
    training = compare.training_throughput(ROOT, str(data_dir), "authors", steps=1, threads=1)
    assert training["tweets_per_s"] > 0 and training["cpu_tweets_per_s"] > 0
    run = compare.full_run(ROOT, str(data_dir), str(tmp_path / "run"), threads=1)
    assert run["steps"] == 5 * 3 and 0 < run["training"] < run["wall"]  # 40 tweets, batch 16: 3 steps per epoch
    assert run["metrics"]["peak_anonymous_memory_gb"] > 0 and "f1" in run["metrics"]["test"]


def test_each_checkout_reads_the_feature_layout_its_own_code_writes(tmp_path):
    older = tmp_path / "older"
    older.mkdir()
    (older / "image_features.py").write_text("def load_image_features(path, img_ids):\n    pass\n")
    assert compare.data_folder(ROOT, "work") == os.path.join("work", "float16")
    assert compare.data_folder(str(older), "work") == os.path.join("work", compare.PER_IMAGE_FOLDER)
    assert compare.data_folder(str(tmp_path), "work") == os.path.join("work", compare.PER_IMAGE_FOLDER)  # none
