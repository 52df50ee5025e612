import pytest

from Xclient.client._urls import parse_url
from Xclient.exceptions import InvalidUrlError, XclientValueError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("localhost", "http://localhost:8000"),
        ("localhost:9000", "http://localhost:9000"),
        ("http://host", "http://host:8000"),
        ("https://host", "https://host:8000"),
        ("grpc://host", "grpc://host:8001"),
        ("grpcs://host:443", "grpcs://host:443"),
        ("GRPC://Host:8201", "grpc://host:8201"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("  10.0.0.2:8200  ", "http://10.0.0.2:8200"),
        ("http://host:8000/", "http://host:8000"),
    ],
)
def test_parse_url_accepts_every_documented_form(url, expected):
    assert str(parse_url(url)) == expected


def test_parse_url_maps_scheme_to_protocol_and_tls():
    assert (parse_url("https://h").protocol, parse_url("https://h").tls) == ("http", True)
    assert (parse_url("grpcs://h").protocol, parse_url("grpcs://h").tls) == ("grpc", True)
    assert parse_url("h:8001").address == "h:8001"


@pytest.mark.parametrize(
    "url", ["", "   ", "ftp://host", "http://", "host:notaport", "host:70000", "http://host:8000/v2/models", "host:0"]
)
def test_invalid_url_is_an_error_that_quotes_the_url(url):
    with pytest.raises(InvalidUrlError) as info:
        parse_url(url)
    assert repr(url.strip()) in str(info.value) or repr(url) in str(info.value)
    assert isinstance(info.value, XclientValueError) and isinstance(info.value, ValueError)


def test_non_str_url_is_refused():
    with pytest.raises(InvalidUrlError, match="expected a str"):
        parse_url(8000)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("box:8001", "grpc://box:8001"),  # Triton's gRPC port: gRPC
        ("box", "http://box:8000"),  # no port: HTTP
        ("box:8000", "http://box:8000"),
        ("box:9001", "http://box:9001"),  # any other port: HTTP
        ("[::1]:8001", "grpc://[::1]:8001"),
        ("http://box:8001", "http://box:8001"),  # a scheme always wins
        ("grpc://box:9000", "grpc://box:9000"),
    ],
)
def test_a_url_without_scheme_is_grpc_on_port_8001_and_http_otherwise(url, expected):
    assert str(parse_url(url)) == expected


@pytest.mark.parametrize(("url", "scheme"), [("invalid_scheme://localhost", "invalid_scheme"), ("ftp://h", "ftp")])
def test_an_unknown_scheme_is_named_in_the_error(url, scheme):
    with pytest.raises(InvalidUrlError, match=f"unknown scheme {scheme!r}; expected one of http, https, grpc, grpcs"):
        parse_url(url)
