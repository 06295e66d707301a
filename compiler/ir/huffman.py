"""Canonical Huffman coding of byte-sized symbols, vectorized with numpy.

The entropy coder of the ``.onnxz`` archive (:mod:`onnxforge.ir.archive`), Deep Compression's
third stage. A stream codes ``n`` symbols from an alphabet of at most 256 with a canonical code
(limited to :data:`MAX_LENGTH` bits, so a 2^16-entry table decodes any code word in one
lookup, and a code length fits a nibble). The symbols are cut into blocks coded one after the other; the bit length of every
block is stored, so that the decoder runs all blocks side by side (one numpy step per symbol of
a block, over all blocks at once) instead of one Python step per symbol.

Layout of :func:`encode`'s bytes (all integers LEB128 varints)::

    n, block, count of code lengths L, L code lengths (4 bits per symbol 0..L-1, 0 = unused,
    two per byte, low nibble first; streams of archive format 1 had one byte per length),
    the bit length of each of the ceil(n / block) blocks (the first as it is, then each one's
    difference from the one before, zigzag-coded), then the blocks' bits, MSB first, each
    block starting on the bit where the previous one ended; zero bits pad the last byte.

Codes are assigned canonically (shorter codes first, ties by symbol value), so the lengths are
the whole code table.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from onnxforge.ir.tensor_data import pack_nibbles, unpack_nibbles

#: Longest code word :func:`encode` writes (a length fits a nibble).
MAX_LENGTH = 15
#: Longest code word :func:`decode` reads (format-1 streams allowed 16 bits): the size of its table.
_DECODE_BITS = 16
#: Fewest symbols per block (a shorter stream is one block).
_MIN_BLOCK = 128


class HuffmanError(ValueError):
    """A stream that does not decode (damaged or not a Huffman stream)."""


def code_lengths(counts: np.ndarray, limit: int = MAX_LENGTH) -> np.ndarray:
    """Huffman code lengths (uint8) for symbol ``counts``, no length above ``limit`` (counts
    are flattened, keeping their order, until the longest code fits). Unused symbols get 0; a
    lone used symbol gets length 1."""
    counts = np.asarray(counts, np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, np.uint8)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    c = counts[used].astype(np.float64)
    while True:
        got = _huffman_lengths(c)
        if got.max() <= limit:
            lengths[used] = got
            return lengths
        c = np.floor(c / 2) + 1  # flatten the distribution and try again


def _huffman_lengths(counts: np.ndarray) -> np.ndarray:
    heap: list[tuple[float, int, list[int]]] = [(float(c), i, [i]) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    depth = np.zeros(len(counts), np.int64)
    tie = len(counts)
    while len(heap) > 1:
        a = heapq.heappop(heap)
        b = heapq.heappop(heap)
        for s in a[2]:
            depth[s] += 1
        for s in b[2]:
            depth[s] += 1
        heapq.heappush(heap, (a[0] + b[0], tie, a[2] + b[2]))
        tie += 1
    return depth


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code (uint32) of every symbol from its length (0: unused)."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(lengths.size, np.uint32)
    code = 0
    prev = 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    if prev and code > (1 << prev):
        raise HuffmanError("code lengths do not form a prefix code")
    return codes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def varint(self) -> int:
        n = shift = 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise HuffmanError("stream ends inside its header")
            b = self.data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise HuffmanError("stream ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def block_size(n: int, bits_per_symbol: float) -> int:
    """Symbols per block for a stream of ``n`` symbols of about ``bits_per_symbol`` coded bits:
    blocks of about 150 bytes, so that the block lengths cost about 1% (the decoder takes one
    numpy step per symbol of a block), between 128 and 4096 symbols."""
    target = math.ceil(1200 / max(bits_per_symbol, 0.25))
    return max(1, min(n, max(_MIN_BLOCK, min(4096, target))))


def table_bytes(top: int) -> int:
    """Bytes the code lengths of symbols ``0..top-1`` take in a stream."""
    return (top + 1) // 2


def encode(symbols: np.ndarray, lengths: np.ndarray | None = None) -> bytes:
    """Huffman-code ``symbols`` (uint8 values); ``lengths`` (code length per symbol value, at
    most :data:`MAX_LENGTH`) is computed from the symbols' counts when not given."""
    sym = np.ascontiguousarray(symbols, np.uint8).ravel()
    n = sym.size
    if lengths is None:
        lengths = code_lengths(np.bincount(sym, minlength=256))
    lengths = np.asarray(lengths, np.uint8)
    if lengths.size and lengths.max() > MAX_LENGTH:
        raise ValueError(f"code lengths above {MAX_LENGTH} bits")
    top = int(np.flatnonzero(lengths)[-1]) + 1 if lengths.any() else 0
    if n and (sym.max() >= top or not lengths[sym].all()):
        raise ValueError("a symbol has no code")
    codes = canonical_codes(lengths)
    sym_len = lengths.astype(np.int64)[sym]
    ends = np.cumsum(sym_len)  # bit position after each symbol
    block = block_size(n, float(ends[-1]) / n if n else 1.0)
    nblocks = math.ceil(n / block) if n else 0
    block_bits = np.diff(np.concatenate([[0], ends[np.minimum(np.arange(1, nblocks + 1) * block, n) - 1]])) if n else np.zeros(0, np.int64)
    head = bytearray(_varint(n) + _varint(block) + _varint(top) + pack_nibbles(lengths[:top]))
    # block lengths: the first, then each one's difference from the one before (zigzag)
    prev = 0
    for b in block_bits:
        d = int(b) - prev
        head += _varint(2 * d if d >= 0 else -2 * d - 1)
        prev = int(b)
    total = int(ends[-1]) if n else 0
    body = np.zeros((total + 7) // 8 + 3, np.float64)
    chunk = 1 << 22
    for start in range(0, n, chunk):
        s = sym[start : start + chunk]
        ln = sym_len[start : start + chunk]
        pos = ends[start : start + chunk] - ln
        shift = 24 - ln - (pos & 7)
        v = codes.astype(np.int64)[s] << shift
        idx = pos >> 3
        lo = int(idx[0])
        span = int(idx[-1]) - lo + 3
        for k, part in enumerate(((v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF)):
            body[lo : lo + span] += np.bincount(idx - lo + k, weights=part, minlength=span)[:span]
    return bytes(head) + body[: (total + 7) // 8].astype(np.uint8).tobytes()


def decode(data: bytes | memoryview, *, byte_lengths: bool = False) -> np.ndarray:
    """The uint8 symbols of a stream made by :func:`encode` (``byte_lengths``: a stream of
    archive format 1, one byte per code length)."""
    r = _Reader(data)
    n = r.varint()
    block = r.varint()
    top = r.varint()
    if top > 256 or block < 1 or n > (1 << 40):
        raise HuffmanError("bad stream header")
    if byte_lengths:
        lengths = np.frombuffer(r.take(top), np.uint8)
    else:
        lengths = unpack_nibbles(r.take(table_bytes(top)))[:top]
    if n == 0:
        return np.zeros(0, np.uint8)
    if not lengths.any() or lengths.max() > _DECODE_BITS:
        raise HuffmanError("bad code lengths")
    nblocks = math.ceil(n / block)
    if nblocks > len(r.data):  # every block length takes a byte at least
        raise HuffmanError("stream ends inside its header")
    zz = np.array([r.varint() for _ in range(nblocks)], np.int64)
    block_bits = np.cumsum(np.where(zz % 2 == 0, zz // 2, -(zz + 1) // 2))
    if nblocks and block_bits.min() < 0:
        raise HuffmanError("bad block lengths")
    body = np.frombuffer(r.take(len(r.data) - r.pos), np.uint8)
    total = int(block_bits.sum())
    if (total + 7) // 8 > body.size:
        raise HuffmanError("stream ends early")
    # A table indexed by the next _DECODE_BITS bits: (symbol, code length).
    codes = canonical_codes(lengths)
    table_sym = np.zeros(1 << _DECODE_BITS, np.uint8)
    table_len = np.zeros(1 << _DECODE_BITS, np.int64)
    for s in np.flatnonzero(lengths):
        ln = int(lengths[s])
        lo = int(codes[s]) << (_DECODE_BITS - ln)
        table_sym[lo : lo + (1 << (_DECODE_BITS - ln))] = s
        table_len[lo : lo + (1 << (_DECODE_BITS - ln))] = ln
    padded = np.concatenate([body, np.zeros(4, np.uint8)]).astype(np.uint32)
    pos = np.concatenate([[0], np.cumsum(block_bits)[:-1]])
    end = pos + block_bits
    out = np.zeros((nblocks, block), np.uint8)
    counts = np.full(nblocks, block, np.int64)
    counts[-1] = n - block * (nblocks - 1)
    for i in range(block):
        live = slice(None) if i < counts[-1] else slice(0, nblocks - 1)
        p = pos[live]
        byte = p >> 3
        word = (padded[byte] << 24) | (padded[byte + 1] << 16) | (padded[byte + 2] << 8) | padded[byte + 3]
        bits = (word >> (32 - _DECODE_BITS - (p & 7)).astype(np.uint32)) & ((1 << _DECODE_BITS) - 1)
        ln = table_len[bits]
        if not ln.all():
            raise HuffmanError("invalid code word")
        out[live, i] = table_sym[bits]
        pos[live] = p + ln
    if not np.array_equal(pos, end):
        raise HuffmanError("block lengths do not match their contents")
    return out.reshape(-1)[:n]


def coded_bits(counts: np.ndarray) -> int:
    """Bits the symbols with these ``counts`` take once coded (payload only)."""
    lengths = code_lengths(counts)
    return int((np.asarray(counts, np.int64) * lengths.astype(np.int64)).sum())
