"""The figures a run draws: the training curve, and the visual attention over an image's 7 x 7 regions.

matplotlib, headless. Sizes are fixed in inches at DPI dots per inch, so a PNG's size is predictable.
"""
import numpy as np

from utils import atomic_path

DPI = 100


def _figure(**kwargs):
    """A matplotlib Figure drawn by the Agg canvas (PNG, no display), outside pyplot: nothing global to register or
    close, and pyplot's import (about half a second) is not paid. matplotlib is imported when a figure is first
    drawn, so that evaluating or tagging without figures does not pay its import either."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)  # becomes fig.canvas
    return fig


def training_curve_figure(history):
    """Dev F1 (%) and training loss per evaluation, epochs on the x axis: a matplotlib figure of 8 x 4 inches."""
    epochs = [entry["epoch"] for entry in history]
    fig = _figure(figsize=(8, 4), dpi=DPI)
    loss_axis = fig.subplots()
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


ATTENTION_COLUMNS = 6


def attention_figure_size(num_words):
    """(width, height) in pixels of the attention PNG of a tweet with `num_words` words."""
    columns = min(num_words, ATTENTION_COLUMNS)
    rows = -(-num_words // ATTENTION_COLUMNS)
    return 2 * columns * DPI, 2 * rows * DPI


def fitted_title(axis, text, renderer):
    """Set `text` (at most 40 characters of it) as the panel's title, cut with "…" until it is no wider than the
    panel, so that it stays inside the figure and clear of its neighbours."""
    fig = axis.figure
    width = axis.get_position().width * fig.bbox.width  # the panel's box; its image is centred in it
    text = text[:40]
    title = axis.set_title(text, fontsize=9)
    kept = len(text)
    while kept > 1 and title.get_window_extent(renderer).width > width:
        kept -= 1
        title.set_text(text[:kept] + "…")
    return title


def attention_figure(words, alpha, image=None):
    """One 7 x 7 panel per word: that word's attention over the image regions (row-major, as VGG16's pool5 grid),
    drawn over the image when it is given (a PIL image), else on its own, titled with the word. Panels are 2 x 2
    inches: a matplotlib figure of attention_figure_size(len(words)) pixels."""
    width, height = attention_figure_size(len(words))
    columns, rows = width // (2 * DPI), height // (2 * DPI)
    fig = _figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    axes = fig.subplots(rows, columns, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.02, wspace=0.1, hspace=0.25)
    renderer = fig.canvas.get_renderer()
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
        fitted_title(axis, words[i], renderer)
    return fig


def plot_visual_attention(words, alpha, path, image=None):
    """attention_figure, saved as a PNG at `path`."""
    fig = attention_figure(words, alpha, image)
    with atomic_path(path) as tmp_path:
        fig.savefig(tmp_path, format="png", dpi=DPI)
