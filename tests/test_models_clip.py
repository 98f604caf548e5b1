"""CLIP (model kind "image"): pixel values and vectors match transformers' processor and CLIPModel.

The reference is transformers itself on a tiny random-weight CLIP saved with ``save_pretrained``:
``CLIPImageProcessor`` (Pillow) + ``CLIPModel.get_image_features`` for images, the saved
``CLIPTokenizer`` + ``get_text_features`` for texts. Every image the tests use is generated here or
read from an installed package (see ``_clip_support``).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image

from _clip_support import (
    IMAGE_SIZE,
    ImageCase,
    Reference,
    build_tiny_clip,
    clip_texts,
    cosines,
    image_processor_class,
    jpeg_bytes,
    picture,
    png_claiming,
    write_image_cases,
)
from vectorstream.errors import ConfigError, ModelError, ParseError
from vectorstream.models import _clip_int8, _clip_onnx, _images
from vectorstream.models._checkset import check_texts
from vectorstream.models._clip import detect_image, load_image
from vectorstream.models._clip_model import ClipModel
from vectorstream.models._images import image_settings, load_pixels, read_image_settings

MODEL_ID = "tests/tiny-clip"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clip-cache")


@pytest.fixture(scope="module")
def onnx_model(folder: Path, cache: Path) -> ClipModel:
    return load_image(folder, MODEL_ID, cache=cache)


@pytest.fixture(scope="module")
def torch_model(folder: Path, cache: Path) -> ClipModel:
    return load_image(folder, MODEL_ID, backend="torch", cache=cache)


@pytest.fixture(scope="module")
def reference(folder: Path) -> Reference:
    return Reference.load(folder)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[ImageCase]:
    return write_image_cases(tmp_path_factory.mktemp("clip-images"))


@pytest.fixture(scope="module")
def reference_images(reference: Reference, cases: list[ImageCase]) -> np.ndarray:
    return reference.image_features([c.reference() for c in cases])


@pytest.fixture(scope="module")
def reference_texts(reference: Reference) -> np.ndarray:
    return reference.text_features(clip_texts())


# -- fidelity -------------------------------------------------------------------------------------


def test_the_image_corpus_covers_the_cases(cases: list[ImageCase]) -> None:
    names = {c.name for c in cases}
    assert len(cases) >= 70
    assert {"size-1x1.png", "size-3000x2000.png", "format-cmyk.jpg", "mode-I16.png"} <= names
    assert {f"exif-{o}.jpg" for o in range(2, 9)} <= names
    assert any(n.startswith("matplotlib:grace_hopper") for n in names)
    modes = set()
    for case in cases:
        if isinstance(case.source, str):
            with Image.open(case.source) as image:
                modes.add(image.mode)
    assert {"L", "LA", "RGBA", "P", "CMYK", "I;16", "1", "RGB", "F"} <= modes


def test_pixel_values_equal_the_processor(
    onnx_model: ClipModel, reference: Reference, cases: list[ImageCase]
) -> None:
    settings = onnx_model.image_settings
    for case in cases:
        ours = load_pixels(case.source, settings)
        theirs = reference.pixels([case.reference()])[0]
        assert ours.dtype == np.float32 and ours.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert np.array_equal(ours, theirs), case.name


@pytest.mark.parametrize("which", ["onnx", "torch"])
def test_image_vectors_match_transformers(
    which: str,
    onnx_model: ClipModel,
    torch_model: ClipModel,
    cases: list[ImageCase],
    reference_images: np.ndarray,
) -> None:
    model = onnx_model if which == "onnx" else torch_model
    assert model.backend == which
    vectors = model.embed_images([c.source for c in cases])
    assert vectors.shape == (len(cases), 24) and vectors.dtype == np.float32
    cos = cosines(vectors, reference_images)
    assert cos.min() >= 0.9999, f"worst image: {cases[int(cos.argmin())].name}"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("which", ["onnx", "torch"])
def test_text_vectors_match_transformers(
    which: str, onnx_model: ClipModel, torch_model: ClipModel, reference_texts: np.ndarray
) -> None:
    model = onnx_model if which == "onnx" else torch_model
    texts = clip_texts()
    assert len(texts) >= 200
    # The set reaches the truncation path and the empty string.
    counts = model.count_tokens(texts)
    assert sum(c > model.max_tokens for c in counts) >= 10 and "" in texts
    cos = cosines(model.embed(texts), reference_texts)
    assert cos.min() >= 0.9999, f"worst text: {texts[int(cos.argmin())][:80]!r}"


def test_the_fidelity_bar_tells_images_apart(
    onnx_model: ClipModel, reference_images: np.ndarray, cases: list[ImageCase]
) -> None:
    # A wrong preprocessing step would show: different pictures, and the same picture turned
    # the wrong way, are far below the 0.9999 the fidelity tests ask for.
    sims = cosines(
        reference_images[:, None, :].repeat(len(cases), 1).reshape(-1, 24),
        np.tile(reference_images, (len(cases), 1)),
    ).reshape(len(cases), len(cases))
    off_diagonal = sims[~np.eye(len(cases), dtype=bool)]
    assert np.median(off_diagonal) < 0.99
    plain = next(c for c in cases if c.name == "format.jpg").source
    turned = onnx_model.embed_images(
        [plain, next(c for c in cases if c.name == "exif-6.jpg").source]
    )
    assert cosines(turned[:1], turned[1:])[0] < 0.9995


def test_unnormalised_vectors_are_the_projection_outputs(
    folder: Path, cache: Path, reference: Reference, cases: list[ImageCase]
) -> None:
    model = load_image(folder, MODEL_ID, cache=cache, normalize=False)
    subset = cases[:12]
    ours = model.embed_images([c.source for c in subset])
    assert np.allclose(ours, reference.image_features([c.reference() for c in subset]), atol=1e-5)
    texts = ["a photo of a cat", "", "x" * 500]
    assert np.allclose(model.embed(texts), reference.text_features(texts), atol=1e-5)


@pytest.mark.parametrize(
    "processor_kwargs",
    [
        {"size": {"shortest_edge": 64}, "crop_size": {"height": 48, "width": 56}},
        {"size": {"shortest_edge": 40}, "crop_size": {"height": 64, "width": 64}},  # pads
        {"size": {"height": 50, "width": 70}, "do_center_crop": False},
        {"resample": 2, "do_normalize": False},
        {"do_rescale": False, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]},
    ],
)
def test_other_processor_settings_give_the_processor_pixels(processor_kwargs: dict) -> None:
    processor = image_processor_class()(**processor_kwargs)
    settings = image_settings(processor.to_dict())
    for w, h, mode in [(1, 1, "RGB"), (300, 100, "RGBA"), (33, 250, "L"), (64, 64, "P")]:
        image = Image.fromarray(picture(w, h, w * h)).convert(mode)
        expected = np.asarray(processor(images=image, return_tensors="np")["pixel_values"][0])
        assert np.array_equal(_images.preprocess(image, settings), expected), (w, h, mode)


def test_very_long_strips_resample_only_the_crop(
    monkeypatch: pytest.MonkeyPatch, reference: Reference, onnx_model: ClipModel
) -> None:
    # The processor resizes a 600x20 strip to 6720x224 before cropping; above the limit only
    # the crop is resampled: a level or so from the processor, never a different picture.
    strip = Image.fromarray(picture(600, 20, 3))
    expected = reference.pixels([strip])[0]
    settings = onnx_model.image_settings
    assert np.array_equal(_images.preprocess(strip, settings), expected)
    monkeypatch.setattr(_images, "MAX_RESIZED_PIXELS", 10_000)
    cropped = _images.preprocess(strip, settings)
    step = 1 / 255 / min(settings.std or (1.0,))
    assert np.abs(cropped - expected).max() <= 2.5 * step
    assert np.abs(cropped - expected).mean() <= 0.1 * step


# -- bad and odd inputs ---------------------------------------------------------------------------


def test_a_truncated_jpeg_is_a_parse_error(onnx_model: ClipModel, tmp_path: Path) -> None:
    data = jpeg_bytes(640, 480)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ParseError, match=r"image 1: .*cut\.jpg.*(truncated|decode)"):
        onnx_model.embed_images([jpeg_bytes(), str(path)])
    with pytest.raises(ParseError, match="image 0"):
        onnx_model.embed_images([data[:200]])


def test_a_decompression_bomb_is_refused_and_the_limit_kept(
    onnx_model: ClipModel, tmp_path: Path
) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    bomb = png_claiming(50_000, 50_000)
    with pytest.raises(ParseError, match="decompression bomb"):
        onnx_model.embed_images([bomb])
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    with pytest.raises(ParseError, match=r"image 0: .*bomb\.png.*decompression bomb"):
        onnx_model.embed_images([str(path)])
    assert limit == Image.MAX_IMAGE_PIXELS


def test_images_over_the_warning_limit_are_logged_then_embedded(
    onnx_model: ClipModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Pillow's own rule: over the limit warns, over twice the limit refuses.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with caplog.at_level(logging.WARNING, logger="vectorstream.models.image"):
        vectors = onnx_model.embed_images([jpeg_bytes(120, 100)])
    assert vectors.shape == (1, 24)
    assert any("decompression bomb" in r.getMessage().lower() for r in caplog.records)
    with pytest.raises(ParseError, match="decompression bomb"):
        onnx_model.embed_images([jpeg_bytes(200, 120)])


def test_an_animated_gif_embeds_its_first_frame(onnx_model: ClipModel, tmp_path: Path) -> None:
    frames = [Image.fromarray(picture(150, 100, s)).convert("P") for s in (1, 2, 3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        stills = []
        for k in (0, 1):
            gif.seek(k)
            stills.append(gif.convert("RGB"))
    vectors = onnx_model.embed_images([str(path), stills[0], stills[1]])
    assert cosines(vectors[:1], vectors[1:2])[0] > 0.99999
    assert cosines(vectors[:1], vectors[2:3])[0] < 0.999


def test_odd_but_valid_inputs_are_handled(
    onnx_model: ClipModel, reference: Reference, tmp_path: Path
) -> None:
    one = Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8))
    cmyk = io.BytesIO()
    Image.fromarray(picture(200, 150, 4)).convert("CMYK").save(cmyk, format="JPEG")
    assert Image.open(io.BytesIO(cmyk.getvalue())).mode == "CMYK"
    named_txt = tmp_path / "photo.txt"
    Image.fromarray(picture(80, 60, 5)).save(named_txt, format="PNG")
    inputs = [one, cmyk.getvalue(), str(named_txt)]
    expected = reference.image_features(
        [
            one,
            Image.open(io.BytesIO(cmyk.getvalue())),
            Image.open(io.BytesIO(named_txt.read_bytes())),
        ]
    )
    assert cosines(onnx_model.embed_images(inputs), expected).min() >= 0.9999


def _text_named_png(path: Path) -> str:
    path.write_text("just some text, not a picture\n")
    return str(path)


def _empty_file(path: Path) -> str:
    path.write_bytes(b"")
    return str(path)


def _missing_file(path: Path) -> str:
    return str(path.with_name("missing.png"))


def _garbage_png_bytes(path: Path) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_text_named_png, r"fake\.png: not an image"),
        (_empty_file, "not an image"),
        (_missing_file, "no such file"),
        (_garbage_png_bytes, r"image 0: <48 bytes>"),
    ],
    ids=["text-named-png", "empty-file", "missing-file", "garbage-png-bytes"],
)
def test_non_images_are_parse_errors(
    onnx_model: ClipModel, tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    with pytest.raises(ParseError, match=message):
        onnx_model.embed_images([make(tmp_path / "fake.png")])  # type: ignore[list-item]


def test_wrong_input_types_are_type_errors(onnx_model: ClipModel) -> None:
    with pytest.raises(TypeError, match="not one"):
        onnx_model.embed_images("picture.png")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        onnx_model.embed_images([42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one string"):
        onnx_model.embed("a caption")
    with pytest.raises(TypeError, match="input 1"):
        onnx_model.embed(["ok", 3])  # type: ignore[list-item]


def test_a_callers_pil_image_is_left_as_it_was(onnx_model: ClipModel) -> None:
    buffer = io.BytesIO()
    Image.fromarray(picture(120, 80, 9)).save(buffer, format="JPEG", exif=_orientation(6))
    image = Image.open(io.BytesIO(buffer.getvalue()))
    onnx_model.embed_images([image])
    assert image.size == (120, 80) and image.getexif().get(0x0112) == 6


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


# -- the model object -----------------------------------------------------------------------------


def test_model_attributes_and_text_protocol(onnx_model: ClipModel, torch_model: ClipModel) -> None:
    m = onnx_model
    assert (m.kind, m.dim, m.max_tokens, m.num_special_tokens) == ("image", 24, 77, 2)
    assert m.image_size == (IMAGE_SIZE, IMAGE_SIZE) and m.model_id == MODEL_ID
    assert "ClipModel" in repr(m) and "onnx" in repr(m) and "image" in repr(m)
    assert m.fingerprint == torch_model.fingerprint  # the backends agree to 1e-6
    assert m.tokenizer.truncation is None and m.tokenizer.padding is None
    assert m.tokenizer_path.name == "tokenizer.json"
    texts = ["a photo of a cat", "word " * 120, ""]
    encodings = m.tokenize(texts)
    assert [len(e.ids) for e in encodings][1] == 77
    assert np.array_equal(m.embed_tokenized(encodings), m.embed(texts))
    assert np.array_equal(m.embed_queries(texts), m.embed(texts))
    assert m.embed([]).shape == (0, 24) and m.embed_images([]).shape == (0, 24)
    with pytest.raises(ValueError, match="max_tokens"):
        m.embed_tokenized([m.tokenizer.encode("word " * 100)])


def test_batches_are_bounded_and_do_not_change_vectors(
    folder: Path, cache: Path, cases: list[ImageCase], onnx_model: ClipModel
) -> None:
    small = load_image(folder, MODEL_ID, cache=cache, batch_size=3)
    seen: list[int] = []
    run = small.towers.images

    def spy(pixels: np.ndarray) -> np.ndarray:
        seen.append(len(pixels))
        return run(pixels)

    small.towers.images = spy  # type: ignore[method-assign]
    sources = [c.source for c in cases[:10]]
    vectors = small.embed_images(sources)
    assert seen == [3, 3, 3, 1]
    assert np.allclose(vectors, onnx_model.embed_images(sources), atol=1e-6)
    pixels = onnx_model.preprocess(sources)
    assert np.allclose(onnx_model.embed_pixels(pixels), vectors, atol=1e-6)
    with pytest.raises(ValueError, match="pixel_values"):
        onnx_model.embed_pixels(pixels[:, :, :10])


def test_concurrent_calls_give_the_same_vectors(
    onnx_model: ClipModel, cases: list[ImageCase]
) -> None:
    sources = [c.source for c in cases[:8] if not isinstance(c.source, Image.Image)]
    texts = clip_texts()[:40]
    want_images, want_texts = onnx_model.embed_images(sources), onnx_model.embed(texts)
    results: list[bool] = []

    def work() -> None:
        ok = np.allclose(onnx_model.embed_images(sources), want_images, atol=1e-6)
        results.append(ok and np.allclose(onnx_model.embed(texts), want_texts, atol=1e-6))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4


# -- folders, loading and export ------------------------------------------------------------------


def test_detect_image(folder: Path, tmp_path: Path) -> None:
    from _models_support import MODEL_ID as MINILM
    from vectorstream.models import resolve_model

    assert detect_image(folder)
    assert not detect_image(resolve_model(MINILM).path)
    assert not detect_image(tmp_path)
    assert not detect_image(tmp_path / "missing")
    for content in ("{not json", "[1, 2]", '{"model_type": "siglip"}', '{"architectures": 5}'):
        (tmp_path / "config.json").write_text(content)
        assert not detect_image(tmp_path)
    (tmp_path / "config.json").write_text('{"architectures": ["CLIPModel"]}')
    assert detect_image(tmp_path)


def test_folder_layouts_hub_and_sentence_transformers(
    folder: Path, tmp_path: Path, cache: Path, onnx_model: ClipModel
) -> None:
    # The hub layout keeps the image settings in preprocessor_config.json.
    hub = tmp_path / "hub"
    shutil.copytree(folder, hub)
    processor_config = json.loads((hub / "processor_config.json").read_text())
    (hub / "processor_config.json").unlink()
    (hub / "preprocessor_config.json").write_text(json.dumps(processor_config["image_processor"]))
    assert read_image_settings(hub) == onnx_model.image_settings
    # sentence-transformers keeps the CLIP folder as a module.
    st = tmp_path / "st"
    shutil.copytree(hub, st / "0_CLIPModel")
    (st / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "0_CLIPModel",
                    "type": "sentence_transformers.models.CLIPModel",
                }
            ]
        )
    )
    assert detect_image(st)
    model = load_image(st, "tests/st-clip", cache=cache)
    texts = ["a photo of a dog", "harbour"]
    assert np.allclose(model.embed(texts), onnx_model.embed(texts), atol=1e-6)


def test_graphs_are_exported_once_and_shipped_graphs_run_without_weights(
    folder: Path,
    cache: Path,
    tmp_path: Path,
    onnx_model: ClipModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image_graph, text_graph = onnx_model.towers.graphs  # type: ignore[union-attr]
    assert image_graph.parent == text_graph.parent and image_graph.parent.parent.parent == cache

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(_clip_onnx, "export_towers", no_export)
    again = load_image(folder, MODEL_ID, cache=cache)
    assert again.towers.graphs == onnx_model.towers.graphs  # type: ignore[union-attr]
    # A folder that ships per-tower graphs (the transformers.js layout) needs neither torch nor
    # weights; its fingerprint differs (the digest covers the graphs, not the weights).
    shipped = tmp_path / "shipped"
    shutil.copytree(folder, shipped)
    (shipped / "model.safetensors").unlink()
    (shipped / "onnx").mkdir()
    shutil.copyfile(image_graph, shipped / "onnx" / "vision_model.onnx")
    shutil.copyfile(text_graph, shipped / "onnx" / "text_model.onnx")
    model = load_image(shipped, "tests/shipped", backend="onnx", cache=tmp_path / "empty-cache")
    assert not (tmp_path / "empty-cache").exists()
    texts, images = ["a photo of a cat"], [picture(50, 40, 1)]
    pil = [Image.fromarray(a) for a in images]
    assert np.allclose(model.embed(texts), onnx_model.embed(texts), atol=1e-6)
    assert np.allclose(model.embed_images(pil), onnx_model.embed_images(pil), atol=1e-6)
    assert model.fingerprint != onnx_model.fingerprint


def test_load_model_finds_the_image_kind(folder: Path, cache: Path) -> None:
    from vectorstream.models import load_model

    model = load_model(str(folder), cache_dir=cache, options={"batch_size": 4})
    assert isinstance(model, ClipModel) and model.batch_size == 4 and model.backend == "onnx"
    assert isinstance(
        load_model(str(folder), kind="image", backend="torch", cache_dir=cache), ClipModel
    )


def test_options_are_checked(folder: Path, cache: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        load_image(folder, MODEL_ID, cache=cache, top_k=3)
    with pytest.raises(ConfigError, match="backend"):
        load_image(folder, MODEL_ID, cache=cache, backend="tensorrt")
    with pytest.raises(ConfigError, match="int8"):
        load_image(folder, MODEL_ID, cache=cache, backend="torch", quantized=True)
    with pytest.raises(ConfigError, match="batch_size"):
        load_image(folder, MODEL_ID, cache=cache, batch_size=0)


def test_broken_folders_are_model_errors(folder: Path, tmp_path: Path, cache: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "processor_config.json").unlink()
    with pytest.raises(ModelError, match="image processor"):
        load_image(broken, "tests/broken", cache=cache)
    (broken / "preprocessor_config.json").write_text(json.dumps({"crop_size": 100}))
    with pytest.raises(ModelError, match="vision"):
        load_image(broken, "tests/broken", cache=cache)
    (broken / "preprocessor_config.json").unlink()
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer"):
        load_image(broken, "tests/broken", cache=cache)
    with pytest.raises(ModelError, match="not a CLIP"):
        load_image(tmp_path, "tests/nothing", cache=cache)


def test_int8_graphs_pass_the_gate_and_stay_close(
    folder: Path, cache: Path, onnx_model: ClipModel, cases: list[ImageCase]
) -> None:
    int8 = load_image(folder, MODEL_ID, cache=cache, quantized=True)
    assert int8.quantized and int8.backend == "onnx"
    assert int8.fingerprint != onnx_model.fingerprint
    directory = int8.towers.graphs[0].parent  # type: ignore[union-attr]
    report = json.loads((directory / _clip_int8.CLIP_GATE).read_text())
    assert report["mean_cosine"] >= 0.99
    assert report["texts"] == len(check_texts()) + len(_clip_int8.gate_images())
    sources = [c.source for c in cases[:16]]
    assert cosines(int8.embed_images(sources), onnx_model.embed_images(sources)).mean() >= 0.99
    texts = clip_texts()[:50]
    assert cosines(int8.embed(texts), onnx_model.embed(texts)).mean() >= 0.99
