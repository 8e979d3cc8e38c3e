from __future__ import annotations

import base64

import pytest

from nimbus.crypto.attachments import AttachmentError, decrypt_attachment, encrypt_attachment


def test_round_trip_and_file_object_shape() -> None:
    data = b"\x00picture bytes" * 1000
    ct, info = encrypt_attachment(data)
    assert ct != data and len(ct) == len(data)
    assert info["v"] == "v2" and info["key"]["alg"] == "A256CTR" and info["key"]["kty"] == "oct"
    assert "=" not in info["key"]["k"] and "=" not in info["iv"]
    iv = base64.b64decode(info["iv"] + "==")
    assert len(iv) == 16 and iv[8:] == bytes(8)  # low 64 bits (counter) zero
    assert decrypt_attachment(ct, info) == data


def test_hash_checked_before_decrypting() -> None:
    ct, info = encrypt_attachment(b"secret document")
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    with pytest.raises(AttachmentError, match="hash"):
        decrypt_attachment(tampered, info)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda i: i.update(v="v1"),
        lambda i: i.pop("hashes"),
        lambda i: i["key"].update(k="!!!"),
        lambda i: i["key"].update(alg="A128CTR"),
        lambda i: i.update(iv="AAAA"),
    ],
)
def test_malformed_file_info_is_a_clear_error(mutate: object) -> None:
    ct, info = encrypt_attachment(b"x")
    mutate(info)  # type: ignore[operator]
    with pytest.raises(AttachmentError):
        decrypt_attachment(ct, info)
