"""Image files through the pipeline with an image model (a fake CLIP at the model seam): each image
becomes one record, text files beside them go through the text tower into the same collection,
and a broken image fails alone."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import vectorstream as vs
from _pipeline_support import FakeEmbedder
from vectorstream.stores import open_store


class FakeClip(FakeEmbedder):
    """Texts as the bag-of-words fake does; an image's vector is its mean colour in the first
    three dimensions, so a search can tell red from blue."""

    kind = "image"
    model_id = "test/fake-clip"

    def __init__(self) -> None:
        super().__init__(dim=8)
        self.fingerprint = "fake-clip"
        self.images_seen = 0

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        from PIL import Image

        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, data in enumerate(images):
            with Image.open(io.BytesIO(data)) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=(0, 1))
            out[i, :3] = rgb + 1.0
            out[i] /= np.linalg.norm(out[i])
        self.images_seen += len(images)
        return out


def _png(color: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_mixed_folder_puts_images_and_text_in_one_collection(tmp_path: Path) -> None:
    corpus = tmp_path / "photos"
    corpus.mkdir()
    (corpus / "red.png").write_bytes(_png((250, 10, 10)))
    (corpus / "blue.png").write_bytes(_png((10, 10, 250), (40, 30)))
    (corpus / "broken.png").write_bytes(_png((0, 250, 0))[:-40])
    (corpus / "notes.md").write_text("# Notes\n\nThe telescope observed distant galaxies.\n")
    model = FakeClip()
    uri = f"lancedb://{tmp_path / 'store'}"
    report = vs.ingest([corpus], store=uri, model=model, workers=1)
    assert report.files_ok == 3 and report.files_failed == 1
    (failure,) = report.errors
    assert failure.source.endswith("broken.png") and "image" in failure.message
    assert model.images_seen == 2
    store = open_store(uri, "documents", mode="r")
    assert store.count() == 3
    red_query = np.zeros(8, dtype=np.float32)
    red_query[0] = 1.0
    top = store.search(red_query, k=3)
    assert top[0].source.endswith("red.png") and top[0].text == ""
    assert top[0].metadata["media_type"] == "image/png" and top[0].metadata["width"] == 16
    texts = [h for h in top if h.text]
    assert texts and texts[0].source.endswith("notes.md")
    # Unchanged files are skipped on a second run; a changed image is replaced, not duplicated.
    again = vs.ingest([corpus], store=uri, model=model, workers=1)
    assert again.files_skipped == 3
    (corpus / "red.png").write_bytes(_png((10, 250, 10)))
    vs.ingest([corpus], store=uri, model=model, workers=1)
    assert open_store(uri, "documents", mode="r").count() == 3


def test_without_an_image_model_images_are_reported_not_embedded(tmp_path: Path) -> None:
    corpus = tmp_path / "photos"
    corpus.mkdir()
    (corpus / "red.png").write_bytes(_png((250, 10, 10)))
    (corpus / "notes.md").write_text("# Notes\n\nA line of text.\n")
    report = vs.ingest(
        [corpus], store=f"lancedb://{tmp_path / 'store'}", model=FakeEmbedder(), workers=0
    )
    assert report.files_ok == 1 and report.files_failed == 1
    assert "image model" in report.errors[0].message


def test_a_real_clip_folder_embeds_images_and_texts(tmp_path: Path) -> None:
    from _clip_support import build_tiny_clip
    from vectorstream.models import load_model

    folder = build_tiny_clip(tmp_path / "clip")
    model = load_model(str(folder), cache_dir=tmp_path / "cache")  # the kind from its config
    assert model.kind == "image"
    corpus = tmp_path / "photos"
    corpus.mkdir()
    red, blue = _png((250, 10, 10), (64, 48)), _png((10, 10, 250), (30, 90))
    (corpus / "red.png").write_bytes(red)
    (corpus / "blue.png").write_bytes(blue)
    (corpus / "notes.txt").write_text("a red square and a blue one")
    uri = f"lancedb://{tmp_path / 'store'}"
    report = vs.ingest([corpus], store=uri, model=model, workers=0)
    assert report.files_ok == 3 and report.files_failed == 0
    import lancedb

    rows = lancedb.connect(str(tmp_path / "store")).open_table("documents").to_arrow().to_pylist()
    by_source = {Path(r["source"]).name: np.asarray(r["vector"], dtype=np.float32) for r in rows}
    expected = model.embed_images([red, blue])
    assert float(by_source["red.png"] @ expected[0]) > 0.9999
    assert float(by_source["blue.png"] @ expected[1]) > 0.9999
    assert float(by_source["notes.txt"] @ model.embed(["a red square and a blue one"])[0]) > 0.9999
