"""bench.py --baseline_dir (compare.py): every measure of a checkout, run as the comparison runs it, on small data."""
import os

import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_comparison_measures_training_and_the_full_run_of_a_checkout(tiny_data, tmp_path):
    data_dir, _ = tiny_data
    rows = dict(compare.compare([("now", ROOT)], str(data_dir), str(tmp_path), steps=1, rounds=1, threads=1,
                                with_full_run=False))
    assert rows["training throughput, paper (tweets/s, batch 16, Adam)"].startswith("now ")
    assert float(rows["now: authors' throughput / paper's"]) > 0
    run = compare.full_run(ROOT, str(data_dir), str(tmp_path / "run"), threads=1)
    assert run["steps"] == 5 * 3 and 0 < run["training"] < run["wall"]  # 40 tweets, batch 16: 3 steps per epoch
    assert run["metrics"]["peak_anonymous_memory_gb"] > 0 and "f1" in run["metrics"]["test"]
