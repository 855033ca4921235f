"""The `--input-shape` example shown when an input has a dynamic dimension, and why each
guessed size was chosen.

A user who reads "pass --input-shape x=1x1x64x224" cannot tell which numbers came from the
model and which were made up; the hint names every guessed dimension and its reason, so
the sizes the model declares are kept, and a guess is visibly one:

- a batch (a batch-like name, or axis 0): 1;
- an image side (rank 4, a static 1/3/4-channel axis first or last): the other side if that
  one is static (a square image, as a captcha or text-line model shows its height), else 224;
- anything else: 128, a placeholder (a common sequence length).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IMAGE_SIDE = 224  # ImageNet classifiers' side: the most common image size
SEQUENCE = 128  # a common sequence length (BERT-style models' typical setting)
CHANNELS = (1, 3, 4)  # gray, RGB, RGBA


@dataclass(frozen=True)
class Guess:
    """A size given to a dynamic dimension and the reason shown for it."""

    value: int
    why: str


def _image_axes(dims: Sequence[int | str]) -> tuple[int, int] | None:
    """The (height, width) axes of an NCHW or NHWC image input, or None."""
    if len(dims) != 4:
        return None
    if dims[1] in CHANNELS:
        return 2, 3
    return (1, 2) if dims[3] in CHANNELS else None


def _static(d: int | str) -> bool:
    return isinstance(d, int) and d > 0


def guess(dims: Sequence[int | str], i: int, batch_names: frozenset[str]) -> Guess:
    """The size shown for dimension `i` of an input declared `dims` (names are dynamic)."""
    d = dims[i]
    if isinstance(d, str) and d.lower() in batch_names:
        return Guess(1, "a batch")
    axes = _image_axes(dims)
    if axes is not None and i in axes:
        other = axes[1] if i == axes[0] else axes[0]
        side = "width" if other == axes[1] else "height"
        if _static(dims[other]):
            return Guess(int(dims[other]), f"a square image, as the static {side}")
        return Guess(IMAGE_SIDE, "a common image side")
    if i == 0:
        return Guess(1, "axis 0, taken as a batch")
    return Guess(SEQUENCE, "a placeholder (a common sequence length)")


def input_shape_hint(name: str, dims: Sequence[int | str], batch_names: frozenset[str]) -> str:
    """`--input-shape NAME=AxBx...` with the input's rank (the CLI accepts it: every size
    >= 1), then, in parentheses, the guessed dimensions with their reasons."""
    guesses = {i: guess(dims, i, batch_names) for i, d in enumerate(dims) if not _static(d)}
    shown = [guesses[i].value if i in guesses else d for i, d in enumerate(dims)]
    example = f"--input-shape {name}={'x'.join(str(d) for d in shown)}"
    if not guesses:
        return example
    by_reason: dict[Guess, list[str]] = {}
    for i, g in guesses.items():
        by_reason.setdefault(g, []).append(f"'{dims[i]}'" if isinstance(dims[i], str)
                                           else f"dim {i}")
    why = "; ".join(f"{', '.join(labels)} = {g.value}, {g.why}"
                    for g, labels in by_reason.items())
    return f"{example} (guessed: {why}; give the sizes you run at)"
