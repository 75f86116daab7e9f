import codecs

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm.data.extract import (
    Skipped,
    extract_file,
    extract_html,
    extract_markdown,
    file_kind,
    is_binary,
    iter_file_text,
)
from cllm.errors import CLLMError

PAGE = """<!DOCTYPE html><html><head><title>The  Crystal &amp; Lattice</title>
<meta name="description" content="A page about crystals.">
<meta name="keywords" content="crystal, lattice">
<style>body { color: red }</style><script>var x = "<p>not text</p>";</script></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<header>Site banner</header>
<h1>Growing crystals</h1>
<p>Salt   forms <b>cubic</b>
crystals &lt;slowly&gt;.</p><p>Second&nbsp;paragraph.<br>New line.</p>
<pre>  code   keeps
    its spaces</pre>
<ul><li>one</li><li>two</li></ul>
<footer>Copyright 2026</footer></body></html>"""


def test_html_text_mode_keeps_readable_lines_only():
    text = extract_html(PAGE, "text")
    assert text.splitlines() == [  # the main content: no menu, banner or footer
        "Salt forms cubic crystals <slowly>.",
        "Second paragraph.",  # nbsp is a space
        "New line.",
        "  code   keeps",
        "    its spaces",
    ]


def test_html_metadata_mixed_and_all_modes():
    assert extract_html(PAGE, "metadata").splitlines() == [
        "Growing crystals",  # the extractor takes the page's own heading for its title
        "A page about crystals.",
        "crystal, lattice",
    ]
    mixed = extract_html(PAGE, "mixed").splitlines()
    assert mixed[:3] == ["Growing crystals", "A page about crystals.", "crystal, lattice"]
    assert mixed[3:] == extract_html(PAGE, "text").splitlines()
    everything = extract_html(PAGE, "all")
    assert "Site banner" in everything and "Copyright 2026" in everything
    assert "Home" in everything and "Salt forms cubic" in everything
    assert "not text" not in everything and "color" not in everything
    with pytest.raises(CLLMError):
        extract_html(PAGE, "pictures")


def test_html_broken_markup_does_not_crash():
    assert (
        extract_html("<p>unclosed <b>bold <i>and <div>more", "text") == "unclosed bold and\nmore\n"
    )
    assert extract_html("", "text") == ""
    assert extract_html("<script>never closed", "all") == ""


def test_markdown_to_readable_text():
    md = (
        "# Title #\n"
        "Some **bold**, _emphasis_, *stars* and `code` with snake_case_name.\n"
        "A [link](http://x.org) and ![alt text](img.png) and <https://a.b/c>.\n"
        "\n"
        "- item one\n"
        "* [x] done item\n"
        "> quoted\n"
        "---\n"
        "```python\n"
        "def f(**kw):  # *not* emphasis\n"
        "```\n"
        "[ref]: http://example.org\n"
        "I like C#\n"
    )
    assert extract_markdown(md + "\n| a | b |\n|---|---|\n| 1 | 2 |\n").splitlines() == [
        "Title",
        "",
        "Some bold, emphasis, stars and code with snake_case_name.",
        "A link and alt text and https://a.b/c.",
        "",
        "item one",
        "",
        "[x] done item",  # CommonMark has no task lists: the box is text
        "",
        "quoted",
        "",
        "def f(**kw):  # *not* emphasis",
        "",
        "I like C#",
        "",
        "a\tb",
        "1\t2",
    ]


def test_kinds(tmp_path):
    assert file_kind(tmp_path / "a.HTML") == "html"
    assert file_kind(tmp_path / "a.md") == "markdown"
    assert file_kind(tmp_path / "a.py") == "code"
    assert file_kind(tmp_path / "Makefile") == "code"
    assert file_kind(tmp_path / "notes") == "text"
    assert file_kind(tmp_path / "page", b"  <!DOCTYPE html><p>x") == "html"


def test_files_by_kind(tmp_path):
    (tmp_path / "a.html").write_text(PAGE)
    (tmp_path / "b.md").write_text("## Hi\n**there**\n")
    (tmp_path / "c.py").write_text("def f():\n    return 1  # *as is*\n")
    assert extract_file(tmp_path / "a.html") == (extract_html(PAGE, "text"), "html")
    assert extract_file(tmp_path / "b.md") == ("Hi\n\nthere\n", "markdown")
    assert extract_file(tmp_path / "c.py") == ("def f():\n    return 1  # *as is*\n", "code")


def test_bom_and_utf16(tmp_path):
    text = "héllo wörld ✓\nline two\n"
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + text.encode())
    (tmp_path / "le.txt").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    (tmp_path / "be.txt").write_bytes(codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    for name in ("bom.txt", "le.txt", "be.txt"):
        assert extract_file(tmp_path / name) == (text, "text")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"  \n\t\n", "empty"),
        (codecs.BOM_UTF8, "empty"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(100), "binary"),
        (bytes(range(1, 9)) * 100, "binary"),
    ],
)
def test_skip_reasons(tmp_path, data, reason):
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    with pytest.raises(Skipped) as err:
        extract_file(path)
    assert err.value.reason.startswith(reason)


def test_missing_file_is_skipped_not_crashed(tmp_path):
    with pytest.raises(Skipped, match="unreadable"):
        extract_file(tmp_path / "nope.txt")


def test_undecodable_late_in_a_big_file(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes(b"fine text\n" * 20000 + b"\xff\xfe broken")
    with pytest.raises(Skipped, match=r"undecodable \(not UTF-8 text at byte 200000\)"):
        extract_file(path)


def test_streamed_in_line_aligned_chunks(tmp_path):
    path = tmp_path / "big.txt"
    line = "the quick brown fox ✓ jumps\n"
    path.write_text(line * 5000)
    kind, pieces = iter_file_text(path, chunk_size=4096)
    pieces = list(pieces)
    assert kind == "text" and len(pieces) > 10
    assert all(p.endswith("\n") for p in pieces)
    assert "".join(pieces) == line * 5000


def test_html_too_big_to_parse_whole_is_streamed(tmp_path):
    from cllm.data.extract import Limits, _html_file_pieces

    page = "<html><body>" + "<p>para &amp; graph</p><script>x<y</script>" * 3000 + "</body></html>"
    chunks = iter([page[i : i + 1000] for i in range(0, len(page), 1000)])
    pieces = list(_html_file_pieces(chunks, Limits(in_memory=5000)))
    assert len(pieces) > 10 and "".join(pieces) == "para & graph\n" * 3000


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff")
    | st.sampled_from("\n\t"),
    max_size=2000,
)
# Mostly-text bytes reach the decoders and parsers; pure random bytes reach the sniffers.
_BYTES = st.binary(max_size=3000) | st.builds(
    lambda t, tail: t.encode("utf-8") + tail, _TEXT, st.binary(max_size=8)
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_BYTES, name=st.sampled_from(["x.txt", "x.html", "x.md", "x.bin"]))
def test_random_bytes_never_crash(tmp_path, data, name):
    path = tmp_path / name
    path.write_bytes(data)
    try:
        text, kind = extract_file(path)
    except Skipped as err:
        assert err.reason
    else:
        assert isinstance(text, str) and text.strip()
        assert not is_binary(data[:8192]) or data[:2] in (b"\xff\xfe", b"\xfe\xff")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=_TEXT.filter(lambda s: s.strip() and not s.lstrip().lower().startswith("<")))
def test_random_text_files_round_trip(tmp_path, text):
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    assert extract_file(path) == (text, "text")
