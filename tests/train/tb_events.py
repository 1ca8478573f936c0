"""A reader of TensorBoard event files written from the TFRecord framing (u64 length, u32 crc, payload, u32 crc)
and the Event protobuf: independent of the writer's code path, for tests."""

import io
import struct
from pathlib import Path

import soundfile
from PIL import Image


def read_events(folder: Path) -> list:
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            payload = data[offset + 12:offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event()
            event.ParseFromString(payload)
            events.append(event)
    return events


def values_by_tag(folder: Path) -> dict[str, list]:
    """tag → [(step, value)], value a float (scalars), a numpy waveform (audio) or an RGB array (images)."""
    import numpy as np

    found: dict[str, list] = {}
    for event in read_events(folder):
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                item = value.simple_value
            elif kind == "audio":
                item, _ = soundfile.read(io.BytesIO(value.audio.encoded_audio_string))
            elif kind == "image":
                item = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
            else:
                continue
            found.setdefault(value.tag, []).append((event.step, item))
    return found
