"""DataSpec: what a model expects of its input, and how it travels with the quantized model."""

import numpy as np
import pytest

from model.config import ConfigError, digits_config
from model.data import data_spec, encode
from model.meta import DataSpec, DataSpecError
from model.params import QuantizedNSM


def test_round_trip_through_the_quantized_model(tmp_path):
    q = QuantizedNSM.random(digits_config(), np.random.default_rng(0))
    q = q.replace(data=data_spec("digits", "thermometer", 4))
    q.save(tmp_path / "q.npz")
    back = QuantizedNSM.load(tmp_path / "q.npz")
    assert back.data == q.data
    assert back.data.n_inputs == 256 and back.data.class_names[3] == "3"


def test_model_without_a_data_description_loads_as_none(tmp_path):
    q = QuantizedNSM.random(digits_config(), np.random.default_rng(1))
    q.save(tmp_path / "q.npz")
    assert QuantizedNSM.load(tmp_path / "q.npz").data is None


def test_encode_follows_the_spec():
    x = np.random.default_rng(2).random((5, 64)).astype(np.float32)
    spec = data_spec("digits", "thermometer", 4)
    assert np.array_equal(spec.encode(x), encode(x, "thermometer", 4))


@pytest.mark.parametrize("spec, message", [
    (dict(encoding="thermometer", levels=4, pixels=784), "gives 3136 inputs"),
    (dict(encoding="threshold", levels=1, pixels=256), "configuration has 256"),
], ids=["inputs", "classes"])
def test_spec_that_does_not_fit_the_configuration_is_refused(spec, message):
    names = tuple("ab") if message == "configuration has 256" else tuple(map(str, range(10)))
    data = DataSpec(dataset="x", class_names=names, **spec)
    q = QuantizedNSM.random(digits_config(), np.random.default_rng(3))
    with pytest.raises(ConfigError, match="data: "):
        q.replace(data=data)


@pytest.mark.parametrize("fields, message", [
    (dict(encoding="gray"), "encoding: must be one of"),
    (dict(levels=0), "levels: must be an integer >= 1"),
    (dict(levels=2.0), "levels: must be an integer >= 1"),
    (dict(encoding="threshold", levels=3), "threshold encoding has 1 level"),
    (dict(pixels=0), "pixels: must be an integer"),
    (dict(class_names=("one",)), "class_names: need at least 2"),
    (dict(dataset=""), "dataset: must be a non-empty name"),
], ids=["encoding", "levels-0", "levels-float", "threshold-levels", "pixels", "classes", "name"])
def test_bad_fields_name_themselves(fields, message):
    base = dict(dataset="digits", encoding="thermometer", levels=4, pixels=64,
                class_names=tuple("0123456789"))
    with pytest.raises(DataSpecError, match=message):
        DataSpec(**{**base, **fields})


def test_mismatched_images_are_refused_with_what_the_model_expects():
    spec = data_spec("fashion-mnist", "threshold")
    with pytest.raises(DataSpecError, match="images of 64 pixels, the model expects 784"):
        spec.encode(np.zeros((2, 64), np.float32))
    assert spec.class_names[9] == "Ankle boot"


def test_json_round_trip_and_errors():
    spec = data_spec("mnist", "threshold")
    assert DataSpec.from_json(spec.to_json()) == spec
    with pytest.raises(DataSpecError, match="pixels: missing"):
        DataSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "pixels"})
    with pytest.raises(DataSpecError, match="not valid JSON"):
        DataSpec.from_json("{")
