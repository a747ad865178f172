"""hw1p2 frame windows against the naive starter-style reference, both padding modes, at utterance boundaries."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.frames import FrameWindows
from pipeline.data.store import FeatureStore

DIM = 3


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [5, 1, 9, 2, 7]  # some utterances shorter than the context
    feats = [rng.normal(size=(n, DIM)).astype(np.float32) for n in lengths]
    labels = [rng.integers(0, 40, n) for n in lengths]
    meta = {"dim": DIM, "partition": "train", "label_kind": "frame", "symbols": [str(i) for i in range(40)],
            "normalization": "cmvn"}
    return FeatureStore.write(tmp_path / "s", [f"u{i}" for i in range(5)], lengths, iter(feats), iter(labels), meta)


def reference_windows(store: FeatureStore, context: int, padding: str) -> np.ndarray:
    """What the starters compute: pad (per utterance or once around the concatenation), slice, flatten."""
    if padding == "global":
        padded = np.pad(np.asarray(store.features_array), ((context, context), (0, 0)))
        return np.stack([padded[i : i + 2 * context + 1].reshape(-1) for i in range(len(store.features_array))])
    rows = []
    for u in range(len(store)):
        padded = np.pad(store.features(u), ((context, context), (0, 0)))
        rows += [padded[i : i + 2 * context + 1].reshape(-1) for i in range(store.lengths[u])]
    return np.stack(rows)


@pytest.mark.parametrize("padding", ["utterance", "global"])
@pytest.mark.parametrize("context", [0, 1, 3, 12])
def test_windows_equal_the_reference(store, padding, context):
    loader = FrameWindows(store, context, padding)
    every_frame = np.arange(len(loader))
    assert np.array_equal(loader.gather(every_frame), reference_windows(store, context, padding))
    assert loader.window_dim == (2 * context + 1) * DIM


def test_padding_modes_differ_only_across_boundaries(store):
    per_utterance = FrameWindows(store, 2, "utterance").gather(np.array([4, 5, 6]))  # end of u0, u1, start of u2
    global_ = FrameWindows(store, 2, "global").gather(np.array([4, 5, 6]))
    assert not np.array_equal(per_utterance, global_)
    inside = FrameWindows(store, 2, "utterance").gather(np.array([8]))  # frames 6..10 all in u2
    assert np.array_equal(inside, FrameWindows(store, 2, "global").gather(np.array([8])))


def test_batches_cover_every_frame_once_with_labels(store):
    loader = FrameWindows(store, 2)
    seen_x, seen_y = [], []
    for x, y in loader.batches(batch_size=4, epoch=0, seed=7):
        seen_x.append(x)
        seen_y.append(y)
    x, y = np.concatenate(seen_x), np.concatenate(seen_y)
    assert len(x) == len(loader) == 24
    order = np.lexsort(x.T[::-1])
    expected = loader.gather(np.arange(len(loader)))
    assert np.array_equal(x[order], expected[np.lexsort(expected.T[::-1])])
    assert sorted(y.tolist()) == sorted(np.asarray(store.labels_array).tolist())


def test_order_is_seeded_per_epoch_and_subset(store):
    loader = FrameWindows(store, 1)
    assert np.array_equal(loader.order(0, seed=1), loader.order(0, seed=1))
    assert not np.array_equal(loader.order(0, seed=1), loader.order(1, seed=1))
    subset = loader.order(0, seed=1, subset=0.5)
    assert len(subset) == 12 and len(set(subset.tolist())) == 12
    with pytest.raises(ValueError, match="subset"):
        loader.order(0, seed=1, subset=0)


def test_prefetched_raises_the_gathering_error_in_the_consumer():
    from pipeline.data.frames import prefetched

    def batches():
        yield 1
        yield 2
        raise OSError("bad read")

    got = []
    with pytest.raises(OSError, match="bad read"):
        for item in prefetched(batches(), enabled=True):
            got.append(item)
    assert got == [1, 2]
    assert list(prefetched(iter([1, 2, 3]), enabled=True)) == [1, 2, 3]
