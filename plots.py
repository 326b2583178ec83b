"""The figures a run draws: the training curve, and the visual attention over an image's 7 x 7 regions.

matplotlib, headless. Sizes are fixed in inches at DPI dots per inch, so a PNG's size is predictable.
"""
import numpy as np

from utils import atomic_path

DPI = 100


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def training_curve_figure(history):
    """Dev F1 (%) and training loss per evaluation, epochs on the x axis: a matplotlib figure of 8 x 4 inches."""
    plt = _pyplot()
    epochs = [entry["epoch"] for entry in history]
    fig, loss_axis = plt.subplots(figsize=(8, 4), dpi=DPI)
    loss_axis.plot(epochs, [entry["train_loss"] for entry in history], "o-", color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss (CRF NLL per tweet)", color="tab:blue")
    f1_axis = loss_axis.twinx()
    f1_axis.plot(epochs, [100 * entry["dev_f1"] for entry in history], "s-", color="tab:red")
    f1_axis.set_ylabel("dev entity F1 (%)", color="tab:red")
    fig.tight_layout()
    return fig


def plot_training_curve(history, path):
    fig = training_curve_figure(history)
    with atomic_path(path) as tmp_path:
        fig.savefig(tmp_path, format="png", dpi=DPI)
    _pyplot().close(fig)


ATTENTION_COLUMNS = 6


def attention_figure_size(num_words):
    """(width, height) in pixels of the attention PNG of a tweet with `num_words` words."""
    columns = min(num_words, ATTENTION_COLUMNS)
    rows = -(-num_words // ATTENTION_COLUMNS)
    return 2 * columns * DPI, 2 * rows * DPI


def plot_visual_attention(words, alpha, path, image=None):
    """One 7 x 7 panel per word: that word's attention over the image regions (row-major, as VGG16's pool5 grid),
    drawn over the image when it is given (a PIL image), else on its own. Panels are 2 x 2 inches."""
    plt = _pyplot()
    width, height = attention_figure_size(len(words))
    columns, rows = width // (2 * DPI), height // (2 * DPI)
    fig, axes = plt.subplots(rows, columns, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False)
    backdrop = np.asarray(image.convert("RGB").resize((224, 224))) if image is not None else None
    for i, axis in enumerate(axes.flat):
        axis.axis("off")
        if i >= len(words):
            continue
        grid = np.asarray(alpha[i], dtype=np.float32).reshape(7, 7)
        if backdrop is not None:
            axis.imshow(backdrop)
            axis.imshow(grid, cmap="jet", alpha=0.5, extent=(0, 224, 224, 0), interpolation="bilinear")
        else:
            axis.imshow(grid, cmap="viridis", interpolation="nearest")
        axis.set_title(words[i][:20], fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.02, wspace=0.1, hspace=0.25)
    with atomic_path(path) as tmp_path:
        fig.savefig(tmp_path, format="png", dpi=DPI)
    plt.close(fig)
