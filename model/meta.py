"""What a model expects of its input data: the data set, the input encoding, the class names.

A `DataSpec` travels with the quantized model (`QuantizedNSM.data`) and the weight image, so
that the host tool encodes inputs as the model was trained and refuses data that does not fit,
instead of guessing the encoding from the input count. Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["DataSpec", "DataSpecError", "ENCODINGS"]

ENCODINGS = ("threshold", "thermometer")


class DataSpecError(ValueError):
    """A data description that is inconsistent, or data that does not match it."""


@dataclass(frozen=True)
class DataSpec:
    """The input side of a model.

    `dataset`: the data set it was trained on ("digits", "mnist", "fashion-mnist", or a user's
    name). `encoding`/`levels`: how pixels in [0, 1] become the +-1 input bits
    (`model.data.encode`); threshold has levels = 1. `pixels`: pixels per input image, so that
    n_inputs = pixels * levels. `class_names`: one name per output class.
    """

    dataset: str
    encoding: str
    levels: int
    pixels: int
    class_names: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if not isinstance(self.dataset, str) or not self.dataset:
            raise DataSpecError("dataset: must be a non-empty name")
        if self.encoding not in ENCODINGS:
            raise DataSpecError(f"encoding: must be one of {ENCODINGS}, got {self.encoding!r}")
        if type(self.levels) is not int or self.levels < 1:
            raise DataSpecError(f"levels: must be an integer >= 1, got {self.levels!r}")
        if self.encoding == "threshold" and self.levels != 1:
            raise DataSpecError(f"levels: threshold encoding has 1 level, got {self.levels}")
        if type(self.pixels) is not int or self.pixels < 1:
            raise DataSpecError(f"pixels: must be an integer >= 1, got {self.pixels!r}")
        if len(self.class_names) < 2:
            raise DataSpecError("class_names: need at least 2 classes")

    @property
    def n_inputs(self) -> int:
        return self.pixels * self.levels

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        enc = self.encoding if self.encoding == "threshold" else f"{self.encoding}/{self.levels}"
        return f"{self.dataset}, {self.pixels} pixels, {enc}, {self.n_classes} classes"

    def check_pixels(self, pixels: int, source: str = "data") -> None:
        """Refuse images of another size than the model's, saying what it expects."""
        if pixels != self.pixels:
            raise DataSpecError(
                f"{source}: images of {pixels} pixels, the model expects {self.pixels} "
                f"({self.describe()})")

    def encode(self, x):
        """Pixels in [0, 1], shape (n, pixels) -> float32 +-1 inputs (n, n_inputs)."""
        from .data import encode
        self.check_pixels(x.shape[-1])
        return encode(x, self.encoding, self.levels)

    # -- serialization ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "encoding": self.encoding, "levels": self.levels,
                "pixels": self.pixels, "class_names": list(self.class_names)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d) -> "DataSpec":
        if not isinstance(d, dict):
            raise DataSpecError("data description: expected an object")
        fields = {"dataset", "encoding", "levels", "pixels", "class_names"}
        missing = sorted(fields - set(d))
        if missing:
            raise DataSpecError(f"{missing[0]}: missing from the data description")
        unknown = sorted(set(d) - fields)
        if unknown:
            raise DataSpecError(f"{unknown[0]}: unknown data description field")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "DataSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataSpecError(f"data description: not valid JSON ({e})") from None
        return cls.from_dict(d)
