"""Page contents: what a write stores, and how well it would compress.

What is modelled
----------------
hvmem never stores 4 KiB of data per page. A page's content is a 64-bit
*token* (docs/architecture.md, data layout and speed): equal tokens mean
byte-identical pages, token 0 means a page of zeroes. Page sharing looks for
equal tokens, compression asks how small a token's page would get, and "no data
lost" is checked by comparing tokens. This module decides which token each write stores.

Three kinds of page, after what the ESX papers find worth sharing
([OSDI02 §4]):

* **zero pages**: token 0. Guests zero memory they free or hand out (Windows
  zeroes its free list at boot); ESX keeps a dedicated zero-page frame
  (esxtop ``ZERO``). About 11 % of the pages one zswap workload swapped were
  zero pages [MAGENHEIMER13].
* **image pages**: identical in every VM booted from the same guest image
  (kernel text, shared libraries, page cache of the same files). Their token
  is a hash of the image and the page number, so two VMs running the same image
  over the same region write equal tokens to the same pages, and sharing can
  merge them. "Many nearly identical VMs might free up more than thirty
  percent of memory, while a more diverse workload might result in savings of
  less than five percent" [VS41-TPS]; sharing excluding zero pages is
  generally below 15 % [BARKER12].
* **duplicate pages**: data this VM holds twice, at two page numbers (a
  library or a file in the page cache loaded twice, the same buffer copied):
  the pages come in pairs, VPNs ``2j`` and ``2j + 1``, whose tokens are equal
  and keyed by the workload's key, so they share within the VM but with no
  other VM. Sharing within one VM is most of what sharing finds: about 90 % of
  it in [BARKER12]; before this class a single VM shared only zero pages.
  ``dup_frac`` is the share of pages in such pairs (0 by default).
* **private pages**: data only this VM has. Every write stores a fresh token, a
  hash of the workload's key (one per VM and workload), the page and a running
  count of the entries the model has served, so a private page changes content
  on each write: a sharing hint taken before a write goes stale, as the OSDI02
  hint frames of [OSDI02 §4.2] expect.

Which kind a page is depends only on (image, page number) and the workload's
fractions: a hash of the page's pair ``v // 2`` makes both pages of the pair
``duplicate`` with probability ``dup_frac``; otherwise the page's class hash
``u`` in [0, 1) puts it in ``image`` if ``u < image_frac / (1 - dup_frac)``,
in ``zero`` below ``(image_frac + zero_frac) / (1 - dup_frac)``, else
``private`` (so each fraction is a share of all pages). Two VMs of the same
image and fractions agree page by page, and a VM with a smaller ``image_frac``
has a subset of the image pages of one with a larger fraction. Page numbers are
guest-virtual page numbers (VPNs), so "the same region" means the same VPNs.

Compressibility
---------------
ESX compresses a page only on the way to the swap file [VI-41]: it is kept
in the VM's compression cache if it compresses to at most 2 KiB (in a 1 KiB
quarter-page slot when it fits in 1 KiB), and swapped otherwise [VS41-ZIP,
VS65-ZIP, VMAESTRO-ZIP]. So what matters is the share of pages that fit in
1 KiB, in 2 KiB, or in neither. A :class:`Compressibility` gives those shares;
sizes are spread uniformly within each band, in 16-byte steps. Defaults: 35 %
to at most 1 KiB, 30 % to (1, 2] KiB, 35 % larger, a mean of about 1.7 KiB, or
2.4:1. Between the "2:1 compression ratio" zram's documentation expects of
LZO [LINUX-ZRAM] and the mean compressed size of 694 bytes
(about 6:1) one zswap workload measured [MAGENHEIMER13]. These are
assumptions to vary, not measurements of ESX, whose compressor is not
documented.

The compressed size travels *inside the token*: its low 8 bits hold the size
in 16-byte units, less one. :func:`compressed_size_bytes` is therefore a pure,
vectorised function of the token alone. The hypervisor needs no configuration
to ask it, a page keeps its compressibility when it is shared, swapped or
copied, and an image page compresses the same in every VM. Token layout::

    0                      the zero page (compressed size 0)
    bit 63                 1: an image page, 0: a private page
    bits 8..62             55 bits of hash (never all zero)
    bits 0..7              compressed size / 16 - 1  (16 .. 4096 bytes)

Token collisions: 55 hash bits give about 2**-55 per pair, so even a run with
2**24 live private tokens (a 64 GiB snapshot) expects fewer than 10**-4 false
matches, the order OSDI02 footnote 3 accepts for its 64-bit hashes. A collision
would just make two pages shareable.

Speed: tokens are made by a Numba kernel, one pass over the batch, and nothing
here draws random numbers: every token is a hash (SplitMix64's mixer of
salted inputs, :mod:`hvmem.core.mix`), so contents are reproducible without an
RNG stream.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numba import njit

from hvmem.core.mix import mix64
from hvmem.errors import ConfigError
from hvmem.params import check, fail, frac, table, text
from hvmem.units import KIB

__all__ = [
    "ESX_COMPRESS_MAX_BYTES",
    "ESX_COMPRESS_SLOT_BYTES",
    "IMAGE_TOKEN_BIT",
    "SIZE_STEP_BYTES",
    "Compressibility",
    "ContentModel",
    "ContentParams",
    "GuestImage",
    "PageClass",
    "compressed_size_bytes",
    "is_image_token",
    "name_key",
]

#: ESX keeps a compressed page only if it fits in this many bytes [VS41-ZIP][VS65-ZIP].
ESX_COMPRESS_MAX_BYTES = 2 * KIB
#: ... in a quarter-page slot of this size when it fits there, else in a half page.
ESX_COMPRESS_SLOT_BYTES = 1 * KIB
#: Compressed sizes are modelled in steps of this many bytes.
SIZE_STEP_BYTES = 16
#: Set in the token of every image page.
IMAGE_TOKEN_BIT = np.uint64(1 << 63)

_SIZE_MASK = np.uint64(0xFF)
_HASH_SHIFT = np.uint64(8)
# Size codes of the band edges: code c stands for (c + 1) * 16 bytes.
_CODES_1KIB = ESX_COMPRESS_SLOT_BYTES // SIZE_STEP_BYTES  # 64 codes: 16 .. 1024 bytes
_CODES_2KIB = ESX_COMPRESS_MAX_BYTES // SIZE_STEP_BYTES  # codes 64..127: 1040 .. 2048 bytes

# Salts keep the hashes for different purposes independent of each other.
_SALT_CLASS = np.uint64(0x3C6E_F372_FE94_F82B)
_SALT_IMAGE = np.uint64(0xA54F_F53A_5F1D_36F1)
_SALT_PRIVATE = np.uint64(0x510E_527F_ADE6_82D1)
_SALT_SIZE = np.uint64(0x9B05_688C_2B3E_6C1F)
_SALT_DUP = np.uint64(0x1F83_D9AB_FB41_BD6B)
_PAIR = np.uint64(1)
_S32 = np.uint64(32)
_S9 = np.uint64(9)
_S16 = np.uint64(16)
_LOW16 = np.uint64(0xFFFF)
_U64_0 = np.uint64(0)
_BAND1 = np.uint64(_CODES_1KIB)
_BAND2 = np.uint64(_CODES_2KIB - _CODES_1KIB)
_U32 = float(1 << 32)


class PageClass(IntEnum):
    """The kind of content a page holds (see the module essay)."""

    PRIVATE = 0
    IMAGE = 1
    ZERO = 2
    DUPLICATE = 3


def name_key(kind: str, name: str) -> int:
    """A 64-bit key for a name, the same in every process (SHA-256, never ``hash()``)."""
    digest = hashlib.sha256(f"hvmem/{kind}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True, slots=True, kw_only=True)
class Compressibility:
    """How small pages compress: the shares that fit in 1 KiB and in 2 KiB.

    The rest compress to more than 2 KiB and are swapped rather than kept
    compressed; sizes are uniform within a band.
    """

    to_1kib_frac: float = frac(0.35, "pages compressing to at most 1 KiB (ESX: a quarter-page "
                               "slot)", source="assumed (module essay)")
    to_2kib_frac: float = frac(0.30, "pages compressing to more than 1 KiB and at most 2 KiB "
                               "(ESX: a half-page slot)", source="assumed (module essay)")

    def __post_init__(self) -> None:
        check(self)
        a, b = self.to_1kib_frac, self.to_2kib_frac
        if a + b > 1.0 + 1e-12:
            raise fail(self, "to_2kib_frac", "to_1kib_frac + to_2kib_frac at most 1",
                       f"{a} + {b} = {a + b}")

    def _cuts(self) -> tuple[int, int]:
        """Band edges as 32-bit thresholds on a uniform hash."""
        c1 = int(round(self.to_1kib_frac * _U32))
        c2 = int(round(min(1.0, self.to_1kib_frac + self.to_2kib_frac) * _U32))
        return c1, c2


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestImage:
    """A guest image: VMs booted from it hold identical image pages.

    Equal names and compressibility give equal image-page tokens; the
    compressibility is part of the image, so a shared image page compresses the
    same in every VM.
    """

    name: str = text("default-image", "the guest image the VM was booted from (equal names "
                     "share image pages)", key="image", pattern=r".+",
                     expect="a non-empty name such as 'ubuntu-22.04'")
    compressibility: Compressibility = table(Compressibility, "how the image's pages compress",
                                             factory=Compressibility,
                                             key="image_compressibility")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentParams:
    """The content mix of one workload's writes.

    The remaining ``1 - image_frac - zero_frac`` of the pages are private.
    """

    image: GuestImage = table(GuestImage, "the guest image", factory=GuestImage, flatten=True)
    image_frac: float = frac(0.15, "share of pages whose content comes from the image",
                             source="assumed; [VS41-TPS][BARKER12] (module essay)")
    zero_frac: float = frac(0.10, "share of pages written with zeroes",
                            source="about 11 % in one zswap workload [MAGENHEIMER13] "
                            "(module essay)")
    dup_frac: float = frac(0.0, "share of pages this VM holds twice (pairs of equal "
                           "pages: libraries, page cache loaded twice)",
                           source="assumed; sharing is mostly within a VM [BARKER12]")
    private_compressibility: Compressibility = table(
        Compressibility, "how the private pages compress", factory=Compressibility)

    def __post_init__(self) -> None:
        check(self)
        i, z, d = self.image_frac, self.zero_frac, self.dup_frac
        if i + z > 1.0 + 1e-12:
            raise fail(self, "zero_frac", "image_frac + zero_frac at most 1",
                       f"{i} + {z} = {i + z}")
        if i + z + d > 1.0 + 1e-12:
            raise fail(self, "dup_frac", "image_frac + zero_frac + dup_frac at most 1",
                       f"{i} + {z} + {d} = {i + z + d}")


# ------------------------------------------------------------------------- kernels


@njit(cache=True, inline="always")
def _class_hash(image_key, v):
    """32 uniform bits that decide a page's class; depend on (image, page) only."""
    return mix64(image_key ^ mix64(v ^ _SALT_CLASS)) >> _S32


@njit(cache=True, inline="always")
def _select(mask, a, b):
    """``a`` where ``mask`` is all ones, ``b`` where it is zero (no branch)."""
    return b ^ ((a ^ b) & mask)


@njit(cache=True, nogil=True)
def _tokens_kernel(vpn, is_write, counter0, image_key, vm_key, image_cut, zero_cut,
                   dup_cut, img_c1, img_c2, prv_c1, prv_c2, out):
    """Tokens for the written entries (0 where not written).

    Branch-free and without a loop-carried counter on purpose: the class, the
    size band and the write flag are random per entry, so branches on them
    mispredict often, and independent iterations let LLVM vectorise the hashing.
    The private counter is the entry's index, so it is unique per write too.
    A duplicate page (``dup_cut`` 0: none) is keyed by its pair, not its write.
    """
    for i in range(vpn.shape[0]):
        v = np.uint64(vpn[i])
        w = np.uint64(is_write[i])
        pair = v >> _PAIR
        dup = _U64_0 - np.uint64(_class_hash(image_key ^ _SALT_DUP, pair) < dup_cut)
        u = _class_hash(image_key, v)
        img = ~dup & (_U64_0 - np.uint64(u < image_cut))  # all ones for an image page
        nonzero = dup | (_U64_0 - (np.uint64(u >= zero_cut) | np.uint64(u < image_cut)))
        base_img = mix64(image_key ^ mix64(v ^ _SALT_IMAGE))
        base_prv = mix64(vm_key ^ mix64(v ^ mix64((counter0 + np.uint64(i)) ^ _SALT_PRIVATE)))
        base_dup = mix64(vm_key ^ mix64(pair ^ _SALT_DUP))
        base = _select(dup, base_dup, _select(img, base_img, base_prv))
        c1 = _select(img, img_c1, prv_c1)
        c2 = _select(img, img_c2, prv_c2)
        # Size code: band [0, 64), [64, 128) or [128, 256) by 32 hash bits, then
        # 16 more bits spread it uniformly within the band (multiply-shift).
        sz = mix64(base ^ _SALT_SIZE)
        us = sz >> _S32
        b1 = np.uint64(us >= c1)
        b2 = np.uint64(us >= c2)
        lo = _BAND1 * b1 + _BAND2 * b2
        width = _BAND1 + _BAND2 * b2
        code = lo + (((sz & _LOW16) * width) >> _S16)
        h = base >> _S9
        h = h | np.uint64(h == _U64_0)  # never all zero: token 0 is the zero page
        token = (img & IMAGE_TOKEN_BIT) | (h << _HASH_SHIFT) | code
        out[i] = token & nonzero & (_U64_0 - w)


@njit(cache=True)
def _classes_kernel(vpn, image_key, image_cut, zero_cut, dup_cut, out):
    for i in range(vpn.shape[0]):
        v = np.uint64(vpn[i])
        if _class_hash(image_key ^ _SALT_DUP, v >> _PAIR) < dup_cut:
            out[i] = 3
            continue
        u = _class_hash(image_key, v)
        out[i] = 1 if u < image_cut else (2 if u < zero_cut else 0)


# ------------------------------------------------------------------------ public API


def compressed_size_bytes(tokens: np.ndarray) -> np.ndarray:
    """Compressed size of each page, in bytes: 0 for the zero page, else 16 .. 4096.

    A pure function of the token (the size is encoded in its low byte, see the
    module essay). ESX keeps a page compressed if this is at most
    :data:`ESX_COMPRESS_MAX_BYTES`, in a :data:`ESX_COMPRESS_SLOT_BYTES` slot if
    it fits there; 4096 means the page does not compress at all.

    Args:
        tokens: page content tokens (any integer array; taken as ``uint64``).

    Returns:
        ``int64`` sizes, one per token.
    """
    t = np.asarray(tokens).astype(np.uint64, copy=False)
    size = ((t & _SIZE_MASK).astype(np.int64) + 1) * SIZE_STEP_BYTES
    size[t == 0] = 0
    return size


def is_image_token(tokens: np.ndarray) -> np.ndarray:
    """True where a token is an image page's (the same in every VM of that image)."""
    t = np.asarray(tokens).astype(np.uint64, copy=False)
    return (t & IMAGE_TOKEN_BIT) != 0


class ContentModel:
    """Makes the tokens one VM's workload writes.

    Args:
        params: the content mix.
        vm_key: keys the private tokens: every workload of every VM needs its
            own (use :meth:`for_vm` with a unique name, or draw one from the
            workload's random stream, as the workloads do by default).
    """

    def __init__(self, params: ContentParams, vm_key: int) -> None:
        if not isinstance(params, ContentParams):
            raise ConfigError(f"content: expected ContentParams, found {type(params).__name__}")
        self.params = params
        self.vm_key = int(vm_key) & ((1 << 64) - 1)
        self.image_key = name_key("image", params.image.name)
        rest = 1.0 - params.dup_frac  # the others are shares of all pages (module essay)
        scale = 1.0 / rest if rest > 0 else 0.0
        cut_i = int(round(min(1.0, params.image_frac * scale) * _U32))
        cut_z = int(round(min(1.0, (params.image_frac + params.zero_frac) * scale) * _U32))
        self._cuts = (cut_i, cut_z, int(round(params.dup_frac * _U32)))
        self._img = params.image.compressibility._cuts()
        self._prv = params.private_compressibility._cuts()
        #: Entries served so far; entry ``k`` of the model's life has counter ``k``,
        #: which makes every private token unique.
        self.counter = 0

    @classmethod
    def for_vm(cls, params: ContentParams, vm_name: str) -> ContentModel:
        """A model whose private tokens are keyed by the VM's name."""
        return cls(params, name_key("vm", vm_name))

    def tokens(self, vpn: np.ndarray, is_write: np.ndarray) -> np.ndarray:
        """The tokens the written entries store (0 where ``is_write`` is False).

        Each call advances the write counter, so private pages get new tokens.

        Args:
            vpn: guest-virtual page numbers (int64).
            is_write: which entries are writes (bool, same length).

        Returns:
            ``uint64`` tokens, one per entry.
        """
        vpn = np.ascontiguousarray(vpn, dtype=np.int64)
        is_write = np.ascontiguousarray(is_write, dtype=np.bool_)
        out = np.empty(vpn.shape[0], dtype=np.uint64)
        _tokens_kernel(vpn, is_write, np.uint64(self.counter), np.uint64(self.image_key),
                           np.uint64(self.vm_key), np.uint64(self._cuts[0]),
                           np.uint64(self._cuts[1]), np.uint64(self._cuts[2]),
                           np.uint64(self._img[0]),
                           np.uint64(self._img[1]), np.uint64(self._prv[0]),
                           np.uint64(self._prv[1]), out)
        self.counter += vpn.shape[0]
        return out

    def page_class(self, vpn: np.ndarray) -> np.ndarray:
        """Which :class:`PageClass` each page is (``int8``); pure, no counter advance."""
        vpn = np.ascontiguousarray(vpn, dtype=np.int64)
        out = np.empty(vpn.shape[0], dtype=np.int8)
        _classes_kernel(vpn, np.uint64(self.image_key), np.uint64(self._cuts[0]),
                        np.uint64(self._cuts[1]), np.uint64(self._cuts[2]), out)
        return out
