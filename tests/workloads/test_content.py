from __future__ import annotations

import numpy as np
import pytest

from hvmem.errors import ConfigError
from hvmem.workloads.content import (
    ESX_COMPRESS_MAX_BYTES,
    ESX_COMPRESS_SLOT_BYTES,
    Compressibility,
    ContentModel,
    ContentParams,
    GuestImage,
    PageClass,
    compressed_size_bytes,
    is_image_token,
    name_key,
)

N = 200_000
VPN = np.arange(0x400, 0x400 + N, dtype=np.int64)
ALL_WRITES = np.ones(N, dtype=np.bool_)


def model(vm="vm1", **kw) -> ContentModel:
    return ContentModel.for_vm(ContentParams(**kw), vm)


def test_class_mix_matches_fractions():
    m = model(image_frac=0.3, zero_frac=0.2)
    share = np.bincount(m.page_class(VPN), minlength=3) / N
    assert share[PageClass.IMAGE] == pytest.approx(0.3, abs=0.01)
    assert share[PageClass.ZERO] == pytest.approx(0.2, abs=0.01)
    assert share[PageClass.PRIVATE] == pytest.approx(0.5, abs=0.01)


def test_same_image_same_region_gives_equal_image_tokens_across_vms():
    a, b = model("vm-a"), model("vm-b")
    ta, tb = a.tokens(VPN, ALL_WRITES), b.tokens(VPN, ALL_WRITES)
    cls = a.page_class(VPN)
    assert np.array_equal(cls, b.page_class(VPN))  # the class depends on the image, not the VM
    image = cls == PageClass.IMAGE
    assert image.any()
    assert np.array_equal(ta[image], tb[image])
    assert is_image_token(ta[image]).all()
    # Private pages differ between the VMs, and are never 0.
    private = cls == PageClass.PRIVATE
    assert np.all(ta[private] != tb[private])
    assert np.all(ta[private] != 0) and not is_image_token(ta[private]).any()
    # Zero pages store the zero token.
    assert np.all(ta[cls == PageClass.ZERO] == 0)


def test_image_tokens_differ_between_images_and_pages():
    a = model(image=GuestImage(name="ubuntu"), image_frac=1.0, zero_frac=0.0)
    b = model(image=GuestImage(name="windows"), image_frac=1.0, zero_frac=0.0)
    ta, tb = a.tokens(VPN, ALL_WRITES), b.tokens(VPN, ALL_WRITES)
    assert np.all(ta != tb)
    assert np.unique(ta).size == N  # one token per page


def test_private_pages_change_on_every_write_and_are_unique():
    m = model(image_frac=0.0, zero_frac=0.0)
    first = m.tokens(VPN, ALL_WRITES)
    second = m.tokens(VPN, ALL_WRITES)
    assert np.all(first != second)
    assert np.unique(np.concatenate([first, second])).size == 2 * N
    # Written twice in one batch: two different tokens.
    twice = m.tokens(np.array([7, 7]), np.array([True, True]))
    assert twice[0] != twice[1]


def test_image_page_rewrites_store_the_same_token():
    m = model(image_frac=1.0, zero_frac=0.0)
    assert np.array_equal(m.tokens(VPN, ALL_WRITES), m.tokens(VPN, ALL_WRITES))


def test_reads_store_nothing_and_tokens_are_deterministic():
    writes = np.arange(N) % 3 == 0
    a = ContentModel(ContentParams(), 1234)
    b = ContentModel(ContentParams(), 1234)
    ta = a.tokens(VPN, writes)
    assert np.all(ta[~writes] == 0)
    assert np.array_equal(ta, b.tokens(VPN, writes))
    assert not np.array_equal(ta, ContentModel(ContentParams(), 1235).tokens(VPN, writes))


def test_smaller_image_fraction_gives_a_subset_of_image_pages():
    small = model(image_frac=0.1).page_class(VPN) == PageClass.IMAGE
    large = model(image_frac=0.4).page_class(VPN) == PageClass.IMAGE
    assert np.all(large[small])


def bands(sizes: np.ndarray) -> tuple[float, float, float]:
    le1 = np.mean(sizes <= ESX_COMPRESS_SLOT_BYTES)
    le2 = np.mean((sizes > ESX_COMPRESS_SLOT_BYTES) & (sizes <= ESX_COMPRESS_MAX_BYTES))
    return float(le1), float(le2), float(1 - le1 - le2)


@pytest.mark.parametrize(("f1", "f2"), [(0.35, 0.30), (0.6, 0.1), (0.0, 0.0), (0.0, 1.0)])
def test_compressibility_distribution(f1, f2):
    comp = Compressibility(to_1kib_frac=f1, to_2kib_frac=f2)
    m = model(image=GuestImage(name="img", compressibility=comp), image_frac=0.5, zero_frac=0.0,
              private_compressibility=comp)
    tokens = m.tokens(VPN, ALL_WRITES)
    sizes = compressed_size_bytes(tokens)
    got = bands(sizes)
    for g, want in zip(got, (f1, f2, 1 - f1 - f2), strict=True):
        assert g == pytest.approx(want, abs=0.01)
    assert sizes.min() >= 16 and sizes.max() <= 4096
    assert np.all(sizes % 16 == 0)


def test_image_and_private_compressibility_are_separate():
    m = model(image=GuestImage(compressibility=Compressibility(to_1kib_frac=1.0, to_2kib_frac=0)),
              image_frac=0.5, zero_frac=0.0,
              private_compressibility=Compressibility(to_1kib_frac=0.0, to_2kib_frac=0.0))
    tokens = m.tokens(VPN, ALL_WRITES)
    sizes = compressed_size_bytes(tokens)
    image = is_image_token(tokens)
    assert np.all(sizes[image] <= 1024)
    assert np.all(sizes[~image] > 2048)


def test_compressed_size_of_zero_page_and_plain_integers():
    assert compressed_size_bytes(np.array([0], np.uint64))[0] == 0
    sizes = compressed_size_bytes(np.array([0, 1, 255, 256], np.uint64))
    assert sizes.tolist() == [0, 32, 4096, 16]
    assert sizes.dtype == np.int64


def test_name_key_is_stable():
    assert name_key("vm", "a") == name_key("vm", "a")
    assert name_key("vm", "a") != name_key("image", "a")
    assert 0 <= name_key("vm", "a") < 1 << 64


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ContentParams(image_frac=1.5), "image_frac"),
        (lambda: ContentParams(zero_frac=-0.1), "zero_frac"),
        (lambda: ContentParams(image_frac=0.7, zero_frac=0.5), "zero_frac"),
        (lambda: ContentParams(image="ubuntu"), "image"),
        (lambda: Compressibility(to_1kib_frac=2), "to_1kib_frac"),
        (lambda: Compressibility(to_1kib_frac=0.8, to_2kib_frac=0.3), "to_2kib_frac"),
        (lambda: Compressibility(to_2kib_frac="half"), "to_2kib_frac"),
        (lambda: GuestImage(name=""), "name"),
    ],
)
def test_bad_content_parameters_name_the_field(make, field):
    with pytest.raises(ConfigError, match=rf"\.{field}:"):
        make()
