"""Token-direct fidelity: decoding from stored tokens equals decoding from the page's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.model import OcrModel, prompt_for
from core.store import open_store
from core.store.storage import from_storage, to_storage
from core.tensors import to_numpy, to_torch
from decode import Decoder
from ingest import Ingestor
from search.plan import search
from tests.helpers import SMALL, page_image

# A tall page is cut into local tiles (6 for 1200x1600); a small one is encoded as a single global view.
PAGES = {
    "tiled": ((1200, 1600), 1121),
    "single-view": ((700, 500), 257),
}


@pytest.mark.parametrize("kind", PAGES)
def test_decode_from_stored_tokens_matches_decoding_the_pixels(kind, backend_settings, tmp_path):
    size, expected_tokens = PAGES[kind]
    image = page_image(["Quarterly statement", "Balance 1,024.50", "Thank you"], size=size)
    path = tmp_path / f"{kind}.png"
    image.save(path)

    model = OcrModel.from_settings(backend_settings)
    store = open_store(backend_settings)
    report = Ingestor(model, store, backend_settings).ingest([path])
    assert report.pages_added == 1 and report.ok

    decoder = Decoder(model, store, backend_settings)
    assert decoder.model.dtype == torch.bfloat16
    (point,) = [p for p in search(store, to_numpy(model.encode_pages([image])[0]), 1)]
    assert point.payload["n_tokens"] == expected_tokens

    # The stored tokens are the encoder's bfloat16 output, bit for bit.
    encoded = model.encode_pages([image])[0]
    stored = decoder.tokens(point.point_id)
    assert stored.shape == (expected_tokens, model.dim)
    assert torch.equal(stored, encoded)

    # Token for token: the ids generated from the stored tokens are those generated from the pixels (the test
    # model's output depends on its image tokens: test_decoding_depends_on_the_tokens).
    ids = decoder.decode_ids(point.point_id)
    assert ids and ids == decoder.decode_image_ids(image)
    from_tokens = decoder.decode(point.point_id)
    assert from_tokens == model.text_of(ids)
    assert from_tokens  # the tiny model always emits something in 12 new tokens
    # Decoding leaves the text's first characters in the payload, for the dashboard; the tokens stay exact.
    after = store.get(point.point_id)
    assert after.payload["text_preview"] == from_tokens[:200] and after.payload["text_mode"] == "ocr"
    assert torch.equal(to_torch(after.tokens, torch.bfloat16), encoded)
    store.close()


def test_decoding_depends_on_the_tokens(settings):
    """The negative control of the test above: an equality of decodes means something only because the test
    model's decoder reads its image tokens. Three different pages give three different outputs within the tests'
    generation length, and so do the same page's tokens shuffled, or with some of them changed."""
    model = OcrModel.from_settings(settings)
    images = [
        page_image(["Quarterly statement", "Balance 1,024.50", "Thank you"], size=(1200, 1600)),
        page_image(["Invoice 42", "Total due 1,420"], size=(700, 500)),
        page_image(["Field notes", "gauge 7", "Heron colony", "48 nests"], size=SMALL),
    ]
    prompt, n = prompt_for("ocr"), settings.max_new_tokens
    tokens = model.encode_pages(images)
    outputs = [model.generate_ids_from_tokens(t, prompt, n) for t in tokens]
    assert len({tuple(ids) for ids in outputs}) == 3, outputs
    assert len({model.text_of(ids) for ids in outputs}) == 3
    page = tokens[1]
    shuffled = page[torch.randperm(len(page), generator=torch.Generator().manual_seed(0))]
    changed = page.clone()
    changed[::4] = -changed[::4]  # a quarter of the rows turned around
    for other in (shuffled, changed):
        assert model.generate_ids_from_tokens(other, prompt, n) != outputs[1]


def test_float16_storage_keeps_every_bfloat16_value():
    """Values outside float16's normal range (tiny or huge) ride in the patch; the rest are exact in float16."""
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.normal(size=(300, 64)).astype(np.float32)).to(torch.bfloat16)
    values[0, :4] = torch.tensor([3e-7, -1e-6, 70000.0, -1e30]).to(torch.bfloat16)
    exact = to_numpy(values)
    form = to_storage(exact)
    assert form.vectors.dtype == np.float16
    assert set(form.patch["i"]) >= {0, 1, 2, 3}
    assert len(form.patch["i"]) < 0.01 * exact.size
    restored = from_storage(form.vectors.astype(np.float32), form.patch)
    assert np.array_equal(restored, exact)
    assert torch.equal(torch.from_numpy(restored).to(torch.bfloat16), values)
