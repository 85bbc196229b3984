"""RC2-CBC decryption (RFC 2268) with any effective key length.

``cryptography`` only offers 128-bit RC2, but the most common certificate-container algorithm
in PKCS#12 files written by OpenSSL 1.x and older Windows/Java tools is
pbeWithSHAAnd40BitRC2-CBC, so the worker decrypts RC2 itself. Decryption only.
"""

from __future__ import annotations

# RFC 2268 section 2: PITABLE, a permutation of 0..255 derived from the digits of pi.
_PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad"
)
assert len(_PITABLE) == 256 and len(set(_PITABLE)) == 256  # import-time sanity check

_MASK = 0xFFFF


def _expand_key(key: bytes, effective_bits: int) -> list[int]:
    if not 1 <= len(key) <= 128:
        raise ValueError("RC2 key must be 1 to 128 bytes")
    if not 1 <= effective_bits <= 1024:
        raise ValueError("RC2 effective key length must be 1 to 1024 bits")
    t = len(key)
    t8 = (effective_bits + 7) // 8
    tm = 255 % (1 << (8 + effective_bits - 8 * t8))
    buf = bytearray(128)
    buf[:t] = key
    for i in range(t, 128):
        buf[i] = _PITABLE[(buf[i - 1] + buf[i - t]) & 0xFF]
    buf[128 - t8] = _PITABLE[buf[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        buf[i] = _PITABLE[buf[i + 1] ^ buf[i + t8]]
    return [buf[2 * i] | (buf[2 * i + 1] << 8) for i in range(64)]


def _rotr(x: int, s: int) -> int:
    return ((x >> s) | (x << (16 - s))) & _MASK


def _decrypt_block(k: list[int], block: bytes) -> bytes:
    r = [int.from_bytes(block[i : i + 2], "little") for i in range(0, 8, 2)]
    j = 63
    for rnd in range(15, -1, -1):
        if rnd in (4, 10):
            r[3] = (r[3] - k[r[2] & 63]) & _MASK
            r[2] = (r[2] - k[r[1] & 63]) & _MASK
            r[1] = (r[1] - k[r[0] & 63]) & _MASK
            r[0] = (r[0] - k[r[3] & 63]) & _MASK
        r[3] = (_rotr(r[3], 5) - k[j] - (r[2] & r[1]) - (~r[2] & r[0])) & _MASK
        r[2] = (_rotr(r[2], 3) - k[j - 1] - (r[1] & r[0]) - (~r[1] & r[3])) & _MASK
        r[1] = (_rotr(r[1], 2) - k[j - 2] - (r[0] & r[3]) - (~r[0] & r[2])) & _MASK
        r[0] = (_rotr(r[0], 1) - k[j - 3] - (r[3] & r[2]) - (~r[3] & r[1])) & _MASK
        j -= 4
    return b"".join(x.to_bytes(2, "little") for x in r)


def rc2_cbc_decrypt(key: bytes, effective_bits: int, iv: bytes, data: bytes) -> bytes:
    """Decrypt ``data`` (a multiple of 8 bytes); padding is left to the caller."""
    if len(iv) != 8 or len(data) % 8:
        raise ValueError("RC2-CBC needs an 8-byte IV and whole 8-byte blocks")
    k = _expand_key(key, effective_bits)
    out = bytearray()
    prev = iv
    for i in range(0, len(data), 8):
        block = data[i : i + 8]
        plain = _decrypt_block(k, block)
        out += bytes(a ^ b for a, b in zip(plain, prev, strict=True))
        prev = block
    return bytes(out)
