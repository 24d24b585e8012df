"""Content decoders under budgets: a bomb is decoded in bounded pieces and stopped at the stream budget."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from loadtests.protocol.content import ContentDecodingError, format_size, make_content_decoder

MiB = 1 << 20


def bomb(encoding: str, size: int) -> bytes:
    """``size`` zero bytes, compressed (gzip as repeated members, like a careless or hostile proxy)."""
    if encoding == "br":
        coder = brotli.Compressor(quality=5)
        return b"".join(coder.process(bytes(MiB)) for _ in range(size // MiB)) + coder.finish()
    if encoding == "deflate":
        coder = zlib.compressobj(9)
        return b"".join(coder.compress(bytes(MiB)) for _ in range(size // MiB)) + coder.flush()
    return gzip.compress(bytes(MiB), 9) * (size // MiB)


def drain(decoder, data: bytes, read: int = 65536) -> tuple[int, int]:
    """Feed ``data`` read by read, draining between reads: (total output, largest single output)."""
    total = largest = 0
    for i in range(0, len(data), read):
        out = decoder.decompress(data[i : i + read])
        while True:
            total += len(out)
            largest = max(largest, len(out))
            if not decoder.pending:
                break
            out = decoder.decompress(b"")
    return total, largest


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "br, gzip"])
def test_a_bomb_comes_out_in_pieces_no_larger_than_the_read_budget(encoding: str):
    data = bomb("br", 32 * MiB) if encoding == "br, gzip" else bomb(encoding, 32 * MiB)
    if encoding == "br, gzip":  # br, then gzip over it: both stages expand
        data = gzip.compress(data)
    decoder = make_content_decoder(encoding, read_limit=MiB, stream_limit=64 * MiB)
    total, largest = drain(decoder, data)
    decoder.finish()
    assert total == 32 * MiB
    assert largest <= 2 * MiB  # brotli may overshoot its output limit by one buffer


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_bomb_fails_at_the_stream_budget_with_a_message_that_says_so(encoding: str):
    decoder = make_content_decoder(encoding, read_limit=MiB, stream_limit=8 * MiB)
    with pytest.raises(ContentDecodingError, match="^decompressed size exceeds 8 MiB per stream$"):
        drain(decoder, bomb(encoding, 64 * MiB))


def test_the_stream_budget_counts_every_byte_and_no_more():
    data = gzip.compress(b"x" * 1000)
    exact = make_content_decoder("gzip", stream_limit=1000)
    assert drain(exact, data)[0] == 1000
    with pytest.raises(ContentDecodingError, match="exceeds 999 bytes per stream"):
        drain(make_content_decoder("gzip", stream_limit=999), data)


def test_concatenated_gzip_members_survive_the_read_budget_between_them():
    members = gzip.compress(b"a" * 300) + gzip.compress(b"b" * 300) + gzip.compress(b"c" * 10)
    decoder = make_content_decoder("gzip", read_limit=256)
    out = decoder.decompress(members)
    while decoder.pending:
        out += decoder.decompress(b"")
    decoder.finish()
    assert out == b"a" * 300 + b"b" * 300 + b"c" * 10


def test_a_deflate_body_whose_first_read_is_one_byte_waits_for_the_second():
    data = zlib.compress(b"hello\n")
    decoder = make_content_decoder("deflate")
    assert decoder.decompress(data[:1]) == b"" and not decoder.pending  # nothing to drain: wait for input
    assert decoder.decompress(data[1:]) == b"hello\n"
    decoder.finish()


def test_sizes_are_named_in_binary_units():
    assert [format_size(n) for n in (64 * MiB, MiB, 1536, 1 << 30, 999)] == [
        "64 MiB",
        "1 MiB",
        "1536 bytes",
        "1 GiB",
        "999 bytes",
    ]
