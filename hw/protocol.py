"""The framed UART protocol, as the gateware sees it.

Numbers, enums and payload layouts are defined once in `firmware/frames.py` (plain Python, shared
with the host tool and the testbenches) and re-exported here; this module adds what only the
gateware needs: the frame checksum as an `amaranth.lib.crc` parameter set built from the same
numbers (its `create()` is the CRC unit), and the image CRC-32.
"""

from amaranth.lib.crc import Algorithm, catalog

from firmware.frames import (FRAME_CRC_PARAMETERS, FRAME_TIMEOUT_BITS, MAX_PAYLOAD, NO_PAYLOAD,
                             PROTOCOL_VERSION, SYNC_REQUEST, SYNC_RESPONSE, DeviceState, Opcode,
                             Status, frame_timeout_cycles)

__all__ = ["Opcode", "Status", "DeviceState", "SYNC_REQUEST", "SYNC_RESPONSE", "FRAME_CRC",
           "IMAGE_CRC", "MAX_PAYLOAD", "NO_PAYLOAD", "PROTOCOL_VERSION", "FRAME_TIMEOUT_BITS",
           "frame_timeout_cycles"]

# Per-frame checksum, and the CRC over a whole weight image (the zlib / PNG CRC-32).
FRAME_CRC = Algorithm(**FRAME_CRC_PARAMETERS)(data_width=8)
IMAGE_CRC = catalog.CRC32_ISO_HDLC(data_width=8)
