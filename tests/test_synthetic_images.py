"""Tests for the synthetic capture images used by demos, tests and benchmarks."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from server.images.probe import probe_image
from teller_client import synthetic
from teller_client.synthetic import (
    KINDS,
    customer_photo,
    id_card_back,
    id_card_front,
    image_for_kind,
    jpeg_of_size,
    voucher,
)

KIND_NAMES = ("ID_FRONT", "ID_BACK", "VOUCHER", "APPLICATION_FORM", "CUSTOMER_PHOTO", "OTHER")


def test_all_kind_names_are_known() -> None:
    assert set(KINDS) == set(KIND_NAMES)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_every_kind_is_an_accepted_realistic_jpeg(kind: str) -> None:
    data = image_for_kind(kind, seed=3)
    info = probe_image(data)
    assert info.content_type == "image/jpeg"
    assert max(info.width, info.height) >= 1200
    assert 100_000 <= len(data) <= 500_000
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # the whole stream decodes, not only the header
        assert im.mode == "RGB"


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_same_seed_gives_same_bytes(kind: str) -> None:
    first = image_for_kind(kind, seed=11)
    # Clear the memo so the second call really renders again.
    synthetic._cached.cache_clear()
    assert image_for_kind(kind, seed=11) == first


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_different_seeds_differ(kind: str) -> None:
    assert image_for_kind(kind, seed=1) != image_for_kind(kind, seed=2)


def test_default_and_custom_sizes() -> None:
    front = probe_image(id_card_front(0))
    assert (front.width, front.height) == (1600, 1010)
    back = probe_image(id_card_back(0, size=(856, 540)))
    assert (back.width, back.height) == (856, 540)
    slip = probe_image(voucher(0, size=(800, 600)))
    assert (slip.width, slip.height) == (800, 600)
    photo = probe_image(customer_photo(0))
    assert (photo.width, photo.height) == (1600, 1200)


def test_named_generators_match_kinds() -> None:
    assert id_card_front(5) == image_for_kind("ID_FRONT", 5)
    assert voucher(5) == image_for_kind("VOUCHER", 5)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown image kind"):
        image_for_kind("SELFIE")


@pytest.mark.parametrize("target", [50_000, 200_000, 600_000])
def test_jpeg_of_size_is_close_to_target(target: int) -> None:
    data = jpeg_of_size(target, seed=1)
    assert abs(len(data) - target) <= target * 0.10
    assert probe_image(data).content_type == "image/jpeg"


def test_jpeg_of_size_is_deterministic() -> None:
    assert jpeg_of_size(200_000, seed=4) == synthetic._jpeg_of_size.__wrapped__(200_000, 4)


def test_jpeg_of_size_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        jpeg_of_size(0)
