import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from disentangle.data.ground_truth import GroundTruth

GT = GroundTruth.dsprites()


def test_dsprites_grid():
    assert GT.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert GT.factor_sizes == (3, 6, 40, 32, 32)
    assert GT.num_images == 737280
    assert GT.is_full_dsprites
    np.testing.assert_allclose(GT.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert GT.factor_values[2][0] == 0.0 and np.isclose(GT.factor_values[2][-1], 2 * np.pi)


def test_official_order():
    # posY fastest, then posX (DSPRITES.md section 2)
    assert GT.index_of([0, 0, 0, 0, 1]) == 1
    assert GT.index_of([0, 0, 0, 1, 0]) == 32
    assert GT.index_of([0, 0, 1, 0, 0]) == 1024
    assert GT.index_of([0, 1, 0, 0, 0]) == 40960
    assert GT.index_of([1, 0, 0, 0, 0]) == 245760
    assert GT.index_of([2, 5, 39, 31, 31]) == 737279


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 737279), min_size=1, max_size=50))
def test_index_round_trip(indices):
    idx = np.array(indices)
    classes = GT.classes_of(idx)
    assert classes.shape == (len(idx), 5)
    assert np.all(classes >= 0) and np.all(classes < np.array(GT.factor_sizes))
    np.testing.assert_array_equal(GT.index_of(classes), idx)


@settings(max_examples=100, deadline=None)
@given(st.tuples(*[st.integers(0, s - 1) for s in (3, 6, 40, 32, 32)]))
def test_classes_round_trip(classes):
    np.testing.assert_array_equal(GT.classes_of(GT.index_of(classes)), classes)


def test_all_classes_matches_enumeration():
    gt = GT.subgrid({"orientation": [0, 3], "pos_x": [0, 31], "pos_y": [1, 2, 5]})
    cls = gt.all_classes()
    assert cls.shape == (gt.num_images, 5)
    np.testing.assert_array_equal(gt.index_of(cls), np.arange(gt.num_images))
    # last factor fastest
    assert list(cls[:3, 4]) == [0, 1, 2] and cls[3, 3] == 1


def test_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        GT.index_of([3, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        GT.classes_of([737280])


def test_sampling_uniform_and_seeded():
    a = GT.sample_classes(20000, np.random.default_rng(1))
    b = GT.sample_classes(20000, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    # each factor uniform: chi-square-ish check on shape (3 classes)
    counts = np.bincount(a[:, 0], minlength=3) / len(a)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.02)
    assert a[:, 2].max() == 39 and a[:, 2].min() == 0


def test_subgrid_values_and_official_classes():
    gt = GT.subgrid({"scale": [0, 5], "pos_x": range(0, 32, 8)})
    assert gt.factor_sizes == (3, 2, 40, 4, 32)
    np.testing.assert_allclose(gt.factor_values[1], [0.5, 1.0])
    np.testing.assert_array_equal(gt.official_classes[3], [0, 8, 16, 24])
    assert not gt.is_full_dsprites
    with pytest.raises(ValueError, match="unknown factor"):
        GT.subgrid({"colour": [0]})
    with pytest.raises(ValueError, match="distinct"):
        GT.subgrid({"scale": [0, 0]})
