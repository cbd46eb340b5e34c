"""The gallery of generated heads (`build.py demo` -> out/demo/gallery.png)."""
import numpy as np

from headcraft_backend.evaluate.gallery import gallery


def test_gallery_of_16_distinct_heads_in_two_views():
    g = gallery("", n=16, tile=48, columns=4)        # the bundled demo generator
    assert len(g.tiles) == 16 and g.seeds == list(range(1, 17))
    assert g.image.shape == (4 * 48, 4 * 2 * 48, 3) and g.image.dtype == np.uint8
    for t in g.tiles:
        assert t.shape == (48, 96, 3)
        front, side = t[:, :48].astype(int), t[:, 48:].astype(int)
        assert np.abs(front - side).mean() > 2          # two different views
        assert (t.max(axis=2) > 40).mean() > 0.2        # a head fills the tile, not a speck
    flat = [t.astype(np.int16).ravel() for t in g.tiles]
    for i in range(16):
        for j in range(i):
            assert np.abs(flat[i] - flat[j]).max() > 0, f"heads {j} and {i} are identical"
    assert all(h > 0 for h in g.hair_mm)
