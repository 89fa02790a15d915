"""A minimal FLAC encoder: 16-bit samples, fixed 4096-sample blocks, no compression.

Each block of each channel becomes a CONSTANT subframe when every sample in it is equal
(silence costs a few bytes a block) and a VERBATIM subframe otherwise. The stream carries
STREAMINFO with the MD5 of the audio, and every frame its CRC-8 header check and CRC-16
footer, so decoders (ffmpeg, flac -t) accept it as a valid file.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from typing import BinaryIO

BLOCK_SIZE = 4096
BITS_PER_SAMPLE = 16


def _crc8_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC8 = _crc8_table()
_CRC16 = _crc16_table()


def crc8(data: bytes) -> int:
    """CRC-8, polynomial x^8 + x^2 + x + 1, initial value 0 (FLAC frame headers)."""
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def crc16(data: bytes) -> int:
    """CRC-16, polynomial x^16 + x^15 + x^2 + 1, initial value 0 (FLAC frame footers)."""
    crc = 0
    table = _CRC16
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def _utf8_number(value: int) -> bytes:
    """FLAC's frame number coding: UTF-8's scheme, stretched to 36 bits."""
    if value < 0x80:
        return bytes([value])
    for length, first_mask in ((2, 0xC0), (3, 0xE0), (4, 0xF0), (5, 0xF8), (6, 0xFC), (7, 0xFE)):
        if value < 1 << (5 * length + 1) or length == 7:
            out = []
            for _ in range(length - 1):
                out.append(0x80 | (value & 0x3F))
                value >>= 6
            out.append(first_mask | value)
            return bytes(reversed(out))
    raise ValueError("frame number too large")


def _streaminfo(sample_rate: int, channels: int, total: int, md5: bytes) -> bytes:
    block = struct.pack(">HH", BLOCK_SIZE, BLOCK_SIZE)
    block += (0).to_bytes(3, "big") + (0).to_bytes(3, "big")  # frame sizes: unknown
    packed = (sample_rate << 44) | ((channels - 1) << 41) | ((BITS_PER_SAMPLE - 1) << 36) | total
    return block + packed.to_bytes(8, "big") + md5


def _audio_md5(channels: list[array]) -> bytes:
    """MD5 of the samples interleaved, little-endian, as FLAC's STREAMINFO defines it."""
    count = len(channels[0])
    interleaved = array("h", bytes(2 * count * len(channels)))
    for index, channel in enumerate(channels):
        interleaved[index :: len(channels)] = channel
    if sys.byteorder == "big":
        interleaved.byteswap()
    return hashlib.md5(interleaved.tobytes()).digest()


def _frame(number: int, channels: list[array], start: int, size: int) -> bytes:
    header = bytearray(b"\xff\xf8")  # sync code, fixed block size
    header.append(0x70)  # block size: 16-bit (size-1) follows; sample rate: from STREAMINFO
    header.append(((len(channels) - 1) << 4) | (0b100 << 1))  # independent channels, 16 bits
    header += _utf8_number(number)
    header += struct.pack(">H", size - 1)
    header.append(crc8(bytes(header)))
    body = bytearray(header)
    for channel in channels:
        block = channel[start : start + size]
        first = block[0]
        if block.count(first) == size:
            body.append(0x00)  # CONSTANT subframe
            body += struct.pack(">h", first)
        else:
            body.append(0x02)  # VERBATIM subframe
            if sys.byteorder == "little":
                block.byteswap()
            body += block.tobytes()
    body += struct.pack(">H", crc16(bytes(body)))
    return bytes(body)


def encode(channels: list[array], sample_rate: int) -> bytes:
    """A whole FLAC file from one array('h') of 16-bit samples per channel (1 to 8 channels)."""
    if not 1 <= len(channels) <= 8:
        raise ValueError("FLAC supports 1 to 8 channels")
    total = len(channels[0])
    if any(len(channel) != total for channel in channels):
        raise ValueError("channels differ in length")
    out = bytearray(b"fLaC")
    out += bytes([0x80]) + (34).to_bytes(3, "big")  # last metadata block, STREAMINFO, 34 bytes
    out += _streaminfo(sample_rate, len(channels), total, _audio_md5(channels))
    for number, start in enumerate(range(0, total, BLOCK_SIZE)):
        out += _frame(number, channels, start, min(BLOCK_SIZE, total - start))
    return bytes(out)


def write(stream: BinaryIO, channels: list[array], sample_rate: int) -> None:
    stream.write(encode(channels, sample_rate))
