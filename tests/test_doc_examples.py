"""The byte examples of docs/protocol.md and docs/image.md are the code's (regenerated here)."""

import pytest

from firmware import doc_examples


@pytest.mark.parametrize("doc", sorted(doc_examples.BLOCKS))
def test_doc_examples_are_current(doc):
    text = (doc_examples.DOCS / doc).read_text()
    expected = doc_examples.BLOCKS[doc]()
    assert doc_examples.current_block(text) == expected, (
        f"docs/{doc} is stale: run `python -m firmware.doc_examples --write`")


def test_examples_show_what_the_frames_module_encodes():
    from firmware import frames
    from model.config import digits_config

    block = doc_examples.protocol_examples()
    ident = frames.encode_response(frames.Status.OK, frames.encode_identify(digits_config()))
    assert " ".join(f"{b:02x}" for b in ident) in block
    from firmware.image_format import image_length
    assert f"(x {-(-image_length(digits_config()) // frames.MAX_PAYLOAD)}," in block
