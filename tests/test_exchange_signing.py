"""HMAC signing as Binance verifies it: documented vectors, raw query+body, timestamp rule."""
import pytest

from daemons.tools.exchange import errors, signing

SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
PARAMS = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
          "&recvWindow=5000&timestamp=1591702613943")


def test_signing_documented_vector_matches():
    assert signing.sign(SECRET, PARAMS) == \
        "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_signing_mixed_query_and_body_concatenated_without_separator():
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    body = "quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943"
    expected = "30baaf0fab549bbeda7f5ef201898b34122da25fd23c646cac2c529aebe670a4"
    assert signing.sign(SECRET, query + body) == expected
    signing.verify(SECRET, query, body + "&signature=" + expected)
    # the doc's printed example (with its stray space) also verifies byte for byte
    doc_body = "quantity=1&price=9000&recvWindow=5000&timestamp= 1591702613943"
    signing.verify(SECRET, query, doc_body + "&signature="
                   "f9d0ae5e813ef6ccf15c2b5a434047a0181cb5a342b903b367ca6d27a66e36f2")


@pytest.mark.parametrize("where", ["query", "body"])
def test_signing_signature_in_query_or_body_verifies(where):
    sig = signing.sign(SECRET, PARAMS)
    if where == "query":
        signing.verify(SECRET, PARAMS + "&signature=" + sig, "")
    else:
        signing.verify(SECRET, "", PARAMS + "&signature=" + sig.upper())   # case-insensitive


def test_signing_reordered_params_rejected_with_1022():
    sig = signing.sign(SECRET, PARAMS)
    reordered = "side=BUY&symbol=BTCUSDT" + PARAMS[len("symbol=BTCUSDT&side=BUY"):]
    with pytest.raises(errors.ApiError) as exc:
        signing.verify(SECRET, reordered + "&signature=" + sig, "")
    assert exc.value.code == -1022 and exc.value.status == 400


def test_signing_missing_signature_rejected_with_1102():
    with pytest.raises(errors.ApiError) as exc:
        signing.verify(SECRET, PARAMS, "")
    assert exc.value.code == -1102


@pytest.mark.parametrize("ts,window,ok", [
    (100_000, None, True),            # now
    (100_000 - 5000, None, True),     # exactly the default window
    (100_000 - 5001, None, False),    # outside the default window
    (100_000 - 9000, "10000", True),  # recvWindow widens it
    (100_999, None, True),            # less than 1 s ahead
    (101_000, None, False),           # 1 s ahead
])
def test_signing_timestamp_rule_follows_binance(ts, window, ok):
    if ok:
        signing.check_timestamp(str(ts), window, 100_000)
    else:
        with pytest.raises(errors.ApiError) as exc:
            signing.check_timestamp(str(ts), window, 100_000)
        assert exc.value.code == -1021


def test_request_params_from_query_and_form_body_query_wins():
    params, body = signing.request_params(
        "POST", "symbol=BTCUSDT&quantity=2", "quantity=1&price=9000&note=a%20b",
        "application/x-www-form-urlencoded; charset=UTF-8")
    assert params == {"symbol": "BTCUSDT", "quantity": "2", "price": "9000", "note": "a b"}
    assert body == "quantity=1&price=9000&note=a%20b"            # what the signature covers
    # a body without any Content-Type is read the same way
    assert signing.request_params("DELETE", "", "orderId=7", None) == ({"orderId": "7"},
                                                                      "orderId=7")


@pytest.mark.parametrize("method,ctype", [("GET", "application/x-www-form-urlencoded"),
                                          ("POST", "application/json"),
                                          ("PUT", "multipart/form-data; boundary=x")])
def test_request_params_body_not_read_on_get_or_other_media_types(method, ctype):
    params, body = signing.request_params(method, "symbol=BTCUSDT", "timestamp=1", ctype)
    assert (params, body) == ({"symbol": "BTCUSDT"}, "")


@pytest.mark.parametrize("query,body", [("symbol=BTCUSDT&symbol=ETHUSDT", ""),
                                        ("", "price=1&price=1"),
                                        ("signature=a", "x=1&signature=b&signature=b")])
def test_request_params_repeated_within_one_part_is_1101(query, body):
    with pytest.raises(errors.ApiError) as exc:
        signing.request_params("POST", query, body, "")
    assert (exc.value.code, exc.value.status) == (-1101, 400)
