"""Tiny, valid media files for emulated answers: a one-pixel PNG and short audio clips.

Audio is mono at 24 kHz (what OpenAI's speech models produce). ``wav`` and ``pcm`` carry a
quiet tone; the compressed formats carry silence, in well-formed frames:

- ``mp3``: MPEG-2 Layer III frames (32 kbit/s, 96 bytes, 24 ms each) with zero side info.
- ``flac``: ``fLaC``, STREAMINFO (with the MD5 of the samples), constant-subframe frames.
- ``opus``: an Ogg stream of OpusHead, OpusTags and 20 ms silent CELT packets.
- ``aac``: ADTS frames (AAC-LC) each holding an empty single-channel element.
- ``pcm``: raw signed 16-bit little-endian samples, no header.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Callable

import numpy as np

__all__ = ["AUDIO", "AUDIO_TYPES", "SAMPLE_RATE", "audio", "png"]

SAMPLE_RATE = 24_000


def png(rgb: bytes) -> bytes:
    """A 1x1 PNG of colour ``rgb`` (three bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" + rgb)) + chunk(b"IEND", b""))


# -- uncompressed -------------------------------------------------------------------------------

def _tone(samples: int, pitch: int) -> bytes:
    t = np.arange(samples, dtype=np.float64)
    wave = 3000 * np.sin(2 * np.pi * (220 + 10 * pitch) * t / SAMPLE_RATE)
    return wave.astype("<i2").tobytes()


def _pcm(samples: int, pitch: int) -> bytes:
    return _tone(samples, pitch)


def _wav(samples: int, pitch: int) -> bytes:
    data = _tone(samples, pitch)
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


# -- mp3 --------------------------------------------------------------------------------------

MP3_FRAME_SAMPLES = 576  # MPEG-2 Layer III
# sync, MPEG-2, Layer III, no CRC | 32 kbit/s, 24 kHz, no padding | mono
_MP3_HEADER = bytes([0xFF, 0xF3, 0x44, 0xC0])
_MP3_FRAME_BYTES = 72 * 32_000 // SAMPLE_RATE  # 96


def _mp3(samples: int, pitch: int) -> bytes:
    frames = max(1, -(-samples // MP3_FRAME_SAMPLES))
    return (_MP3_HEADER + bytes(_MP3_FRAME_BYTES - 4)) * frames


# -- flac ---------------------------------------------------------------------------------------

FLAC_BLOCK = 4096


def _crc(data: bytes, poly: int, width: int) -> int:
    top, mask, crc = 1 << (width - 1), (1 << width) - 1, 0
    for byte in data:
        crc ^= byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


def _flac(samples: int, pitch: int) -> bytes:
    info = struct.pack(">HH", FLAC_BLOCK, FLAC_BLOCK) + bytes(6)  # block sizes; frame sizes unknown
    # 20 bits rate, 3 bits channels-1, 5 bits bits-per-sample-1, 36 bits total samples
    packed = (SAMPLE_RATE << 44) | (0 << 41) | (15 << 36) | samples
    info += packed.to_bytes(8, "big") + hashlib.md5(bytes(2 * samples)).digest()
    out = [b"fLaC", bytes([0x80, 0, 0, len(info)]), info]  # last metadata block: STREAMINFO
    for number, start in enumerate(range(0, samples, FLAC_BLOCK)):
        size = min(FLAC_BLOCK, samples - start)
        size_code, tail = (0xC, b"") if size == FLAC_BLOCK else (0x7, struct.pack(">H", size - 1))
        # sync + fixed blocking | block size, 24 kHz | mono, 16 bits | frame number, UTF-8 coded
        head = (bytes([0xFF, 0xF8, (size_code << 4) | 0x7, 0x08])
                + chr(number).encode("utf-8", "surrogatepass") + tail)
        head += bytes([_crc(head, 0x07, 8)])
        frame = head + b"\x00\x00\x00"  # a CONSTANT subframe of value 0
        out.append(frame + struct.pack(">H", _crc(frame, 0x8005, 16)))
    return b"".join(out)


# -- ogg opus ---------------------------------------------------------------------------------

OPUS_PACKET = b"\xf8\xff\xfe"  # 20 ms of CELT silence
OPUS_PACKET_SAMPLES = 960  # at Opus's 48 kHz clock
OPUS_PRE_SKIP = 312


def _ogg_page(payload: list[bytes], *, granule: int, seq: int, flags: int) -> bytes:
    lacing = b"".join(bytes([255] * (len(p) // 255) + [len(p) % 255]) for p in payload)
    head = (b"OggS" + bytes([0, flags]) + struct.pack("<qIII", granule, 0x454D55, seq, 0)
            + bytes([len(lacing)]) + lacing)
    page = head + b"".join(payload)
    crc = _crc(page, 0x04C11DB7, 32)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def _opus(samples: int, pitch: int) -> bytes:
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, OPUS_PRE_SKIP, SAMPLE_RATE, 0, 0)
    vendor = b"ipfs-accelerate-api emulator"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    pages = [_ogg_page([head], granule=0, seq=0, flags=0x02),
             _ogg_page([tags], granule=0, seq=1, flags=0)]
    packets = max(1, -(-samples * 2 // OPUS_PACKET_SAMPLES))  # 24 kHz -> 48 kHz clock
    done = 0
    while done < packets:
        n = min(255, packets - done)
        done += n
        granule = OPUS_PRE_SKIP + done * OPUS_PACKET_SAMPLES
        pages.append(_ogg_page([OPUS_PACKET] * n, granule=granule, seq=len(pages),
                               flags=0x04 if done == packets else 0))
    return b"".join(pages)


# -- aac (ADTS) ---------------------------------------------------------------------------------

AAC_FRAME_SAMPLES = 1024
_AAC_SILENCE = b"\x01\x40\x20\x07"  # SCE: global gain 160, no bands; END


def _aac(samples: int, pitch: int) -> bytes:
    length = 7 + len(_AAC_SILENCE)
    # sync, MPEG-4, no CRC | AAC-LC, 24 kHz (index 6), mono | frame length | buffer fullness 0x7FF
    header = bytes([0xFF, 0xF1, 0x58, 0x40 | (length >> 11), (length >> 3) & 0xFF,
                    ((length & 7) << 5) | 0x1F, 0xFC])
    return (header + _AAC_SILENCE) * max(1, -(-samples // AAC_FRAME_SAMPLES))


#: response_format -> writer(samples, pitch)
AUDIO: dict[str, Callable[[int, int], bytes]] = {
    "mp3": _mp3, "wav": _wav, "pcm": _pcm, "flac": _flac, "opus": _opus, "aac": _aac,
}
#: response_format -> Content-Type
AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac",
               "opus": "audio/ogg", "aac": "audio/aac"}


def audio(fmt: str, seconds: float, pitch: int = 0) -> bytes:
    """``seconds`` of audio in format ``fmt`` (a key of :data:`AUDIO`)."""
    return AUDIO[fmt](max(1, int(seconds * SAMPLE_RATE)), pitch)
