"""Augmentation: per-sample random shifts and flips applied to the whole batch at once."""

import numpy as np
import pytest

import vecnn as vn
from vecnn.data import Augment, random_flip, random_shift


def shifted(img, ty, tx, mode="constant"):
    """Loop reference: image (C, H, W) moved down by ty and right by tx, border filled per mode."""
    c, h, w = img.shape
    s = max(abs(ty), abs(tx))
    padded = np.pad(img, ((0, 0), (s, s), (s, s)), mode=mode)
    return padded[:, s - ty : s - ty + h, s - tx : s - tx + w]


def offsets_of(x, out, shift, mode="constant"):
    """For each sample, the (ty, tx) in [-shift, shift]^2 that explains its output (loop reference)."""
    found = []
    for img, o in zip(x, out):
        matches = [
            (ty, tx)
            for ty in range(-shift, shift + 1)
            for tx in range(-shift, shift + 1)
            if np.array_equal(shifted(img, ty, tx, mode), o)
        ]
        assert matches, "an output sample is no shift of its input"
        found.append(matches[0])
    return found


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_each_sample_is_its_input_shifted_within_bounds(rng, mode):
    x = rng.random((300, 2, 7, 6), dtype=np.float32) + 0.5  # no zeros: a shift is always visible
    out = random_shift(x, 2, np.random.default_rng(1), mode=mode)
    assert out.shape == x.shape and out.dtype == np.float32
    offsets = offsets_of(x, out, 2, mode)
    assert len(set(offsets)) == 25  # every offset in [-2, 2]^2 occurs


def test_shift_pairs_and_zero_shift(rng):
    x = rng.random((50, 1, 5, 9), dtype=np.float32) + 0.5
    out = random_shift(x, (0, 3), np.random.default_rng(0))
    tys = {ty for ty, _ in offsets_of(x, out, 3)}
    assert tys == {0}  # rows never move
    assert random_shift(x, 0, np.random.default_rng(0)) is x


def test_flip_mirrors_about_half(rng):
    x = rng.random((400, 3, 4, 5), dtype=np.float32)
    out = random_flip(x, np.random.default_rng(0))
    same = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    mirrored = np.array([np.array_equal(o, i[..., ::-1]) for o, i in zip(out, x)])
    assert np.all(same | mirrored)
    assert 150 < mirrored.sum() < 250
    assert np.array_equal(random_flip(x, np.random.default_rng(0), p=0), x)
    assert np.array_equal(random_flip(x, np.random.default_rng(0), p=1), x[..., ::-1])


def test_input_untouched_and_seeded(rng):
    x = rng.random((20, 1, 8, 8), dtype=np.float32)
    before = x.copy()
    aug = Augment(shift=2, flip=True)
    a = aug(x, np.random.default_rng(5))
    b = aug(x, np.random.default_rng(5))
    c = aug(x, np.random.default_rng(6))
    assert np.array_equal(x, before)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    own1, own2 = Augment(shift=1, seed=3), Augment(shift=1, seed=3)
    assert np.array_equal(own1(x), own2(x))  # its own generator when given none


def test_refuses_non_image_batches_and_bad_settings():
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        random_shift(np.zeros((4, 64), np.float32), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shift"):
        Augment(shift=-1)
    with pytest.raises(ValueError, match="mode"):
        Augment(shift=1, mode="wrap")
    for mode in ("reflect", "constant", "edge"):  # a shift of the image's size leaves nothing of it
        with pytest.raises(ValueError, match=r"too large for 3x3 images: at most \(2, 2\)"):
            random_shift(np.zeros((2, 1, 3, 3), np.float32), 3, np.random.default_rng(0), mode=mode)
    with pytest.raises(ValueError, match=r"too large for 8x8 images: at most \(7, 7\)"):
        Augment.from_spec("shift:100000").check_input((1, 8, 8))  # refused before any padding
    with pytest.raises(ValueError, match="image samples"):
        Augment(shift=1).check_input((64,))
    Augment.from_spec("shift:7:2").check_input((1, 8, 3))


def test_spec_strings():
    a = Augment.from_spec("shift:2,flip")
    assert a.shift == (2, 2) and a.flip and a.mode == "constant"
    assert Augment.from_spec(a.spec()).config() == a.config()
    b = Augment.from_spec("crop:1:3,mode:edge")
    assert b.shift == (1, 3) and b.mode == "edge" and Augment.from_spec(b.spec()).shift == (1, 3)
    for bad, token in [
        ("shift:x", "shift:x"),
        ("shift:2,spin", "spin"),
        ("mode:wrap", "mode:wrap"),
        ("shift:1:2:3", "shift:1:2:3"),
        ("flip:1", "flip:1"),
    ]:
        with pytest.raises(ValueError, match=f"bad token {token!r}"):
            Augment.from_spec(bad)


def test_fit_applies_augmentation_per_batch():
    from vecnn import layers as L

    X_train, y_train, _, _ = vn.data.load("digits")
    X, y = X_train[:256], y_train[:256]
    seen = []

    class Spy(Augment):
        def __call__(self, xb, rng=None):
            out = super().__call__(xb, rng)
            seen.append((xb.shape, out.shape, out.dtype))
            return out

    model = vn.Sequential([L.Flatten(), L.Dense(64, 10)], seed=0)
    model.fit(X, y, loss="cross_entropy", epochs=1, batch_size=64, verbose=0, augment=Spy(shift=1))
    assert len(seen) == 4 and all(s[0] == s[1] and s[2] == np.float32 for s in seen)
