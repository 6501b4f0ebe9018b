"""The sandbox keeps a command's output bounded: head and tail, a visible cut, the true size."""

import pytest

from aether_core.sandbox import BoundedOutput, Unavailable, killed_by


def fed(limit: int, *chunks: bytes) -> BoundedOutput:
    out = BoundedOutput(limit)
    for chunk in chunks:
        out.feed(chunk)
    return out


def test_output_within_the_limit_is_kept_whole():
    out = fed(10, b"hello ", b"world")  # 11 bytes: one too many
    assert fed(11, b"hello ", b"world").text() == "hello world"
    assert out.total == 11 and out.text() == "hello\n[… 1 bytes cut …]\nworld"


def test_head_and_tail_are_kept_across_many_chunks():
    out = fed(8, *[bytes([65 + i % 26]) * 3 for i in range(1000)])
    assert out.total == 3000
    assert out.text() == "AAAB\n[… 2992 bytes cut …]\nKLLL"
    assert len(out.head) == 4 and len(out.tail) == 4


def test_a_chunk_larger_than_the_tail_replaces_it():
    out = fed(6, b"abc", b"0123456789", b"xy")
    assert out.text() == "abc\n[… 9 bytes cut …]\n9xy"


def test_no_character_is_split_at_the_cut():
    text = "é" * 100  # two bytes each
    out = fed(7, text.encode())
    shown = out.text()
    assert "\ufffd" not in shown
    head, marker, tail = shown.partition("\n[… ")
    assert set(head) == {"é"} and set(tail.split("…]\n")[1]) == {"é"}
    cut = int(marker and tail.split(" bytes")[0])
    assert cut + len(head.encode()) + len(tail.split("…]\n")[1].encode()) == 200


def test_invalid_bytes_are_replaced_not_fatal():
    assert fed(100, b"ok \xff\xfe").text() == "ok \ufffd\ufffd"


def test_a_zero_limit_keeps_nothing_but_counts():
    out = fed(0, b"abc")
    assert (out.total, out.text()) == (3, "\n[… 3 bytes cut …]\n")


def test_signal_statuses_are_named():
    assert killed_by(128 + 9) == "SIGKILL"
    assert killed_by(128 + 24) == "cpu"
    assert killed_by(128 + 25) == "file_size"
    assert killed_by(-15) == "SIGTERM"
    assert killed_by(128 + 200) is None


async def test_unavailable_refuses_to_run(tmp_path):
    from aether_core.sandbox import SandboxUnavailable

    with pytest.raises(SandboxUnavailable, match="no namespaces"):
        await Unavailable("no namespaces").run("true", tmp_path)
