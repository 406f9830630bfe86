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


def _doc_command(doc: str, prefix: str, needle: str) -> list[str]:
    """The arguments of the one command line of `doc` that starts (after the venv path) with
    `prefix` and contains `needle`."""
    import shlex
    from pathlib import Path

    text = (Path(doc_examples.DOCS).parent / doc).read_text()
    lines = [line.strip() for line in text.splitlines()
             if prefix in line and needle in line and not line.strip().startswith("|")]
    assert len(lines) == 1, (doc, prefix, needle, lines)
    words = shlex.split(lines[0].split("#")[0])
    return words[words.index(prefix.split()[-1]) + 1:]


def test_training_doc_conv_example_is_the_digits_cnn():
    """docs/training.md's conv command trains the network of digits_conv_config (the identity
    of the hardware configuration it is quantized for)."""
    from model.config import digits_conv_config
    from model.data import PIXELS
    from model.train import _trained_sizes, hardware_config, parse_args

    argv = _doc_command("docs/training.md", "-m model.train", "--dataset digits --arch conv")
    opts = parse_args(argv)
    sizes = _trained_sizes(opts, PIXELS[opts.dataset], opts.levels, 10)
    assert hardware_config(opts, sizes).identity == digits_conv_config().identity
    assert "8c3-p2-16c3-p2-64-10" in (doc_examples.DOCS / "training.md").read_text()


def test_training_doc_mnist_cnn_example_parses():
    """docs/training.md's MNIST CNN command (continued lines) trains 8c5p2,16c5p2 then 64 on
    28x28 threshold inputs: the network whose golden error the page states."""
    import re
    import shlex
    from pathlib import Path

    from model.config import conv_layer_sizes
    from model.train import _trained_sizes, parse_args, recipe

    text = (Path(doc_examples.DOCS).parent / "docs/training.md").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line for line in joined.splitlines()
             if line.startswith("python -m model.train --dataset mnist") and "--arch conv" in line]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0])
    opts = parse_args(words[words.index("model.train") + 1:])
    # One level per pixel: the MNIST recipe's threshold encoding (model.train.recipe).
    assert recipe("mnist", "conv").levels == 1
    assert _trained_sizes(opts, 784, 1, 10) == conv_layer_sizes(
        (28, 28, 1), ((8, 5, 2), (16, 5, 2)), (64, 10))
    assert (opts.epochs, opts.lr) == (20, 1e-3)


def test_readme_conv_main_job_examples_parse():
    """README's main-job conv examples: the digits CNN, through the RTL and through the
    software model of the device."""
    from model.config import digits_conv_config
    from tools.main import _parser, train_options

    for needle, device in (("--hidden 64", "rtl"), ("--device model", "model")):
        args = _parser().parse_args(_doc_command("README.md", "python -m tools.main", needle))
        opts = train_options(args)
        assert (args.arch, args.device) == ("conv", device)
        cfg = digits_conv_config()
        assert (opts.conv, opts.hidden) == (cfg.conv_layers, cfg.layer_sizes[cfg.n_conv + 1:-1])
