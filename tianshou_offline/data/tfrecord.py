"""GZIP-compressed TFRecord files of ``tf.train.Example`` records, without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little endian)
    uint32 masked CRC32C of the 8 length bytes
    length bytes of data
    uint32 masked CRC32C of the data

with ``masked(crc) = ((crc >> 15 | crc << 17) + 0xA282EAD8) mod 2**32``. RL Unplugged
compresses the whole file with GZIP. ``read_gzip_tfrecords`` streams such a file and verifies
every CRC; ``write_gzip_tfrecords`` writes one (the tests and the benchmark make their own
shards with it).

``Example`` is the ``tf.train.Example`` message class, built at import time from a descriptor
assembled in Python (the schema of tensorflow/core/example/{example,feature}.proto), so no
``.proto`` file, ``protoc`` or TensorFlow is needed::

    message BytesList { repeated bytes value = 1; }
    message FloatList { repeated float value = 1 [packed = true]; }
    message Int64List { repeated int64 value = 1 [packed = true]; }
    message Feature { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                                   Int64List int64_list = 3; } }
    message Features { map<string, Feature> feature = 1; }
    message Example { Features features = 1; }
"""

from __future__ import annotations

import gzip
import os
import queue
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_CRC_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length bytes
_FOOTER = struct.Struct("<I")  # masked CRC of the data


def masked_crc32c(data: bytes) -> int:
    """The CRC32C of ``data``, rotated and offset as TFRecord stores it."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


class TFRecordError(Exception):
    """A TFRecord file is corrupt; ``record_index`` is the record being read (0-based)."""

    def __init__(self, record_index: int, reason: str) -> None:
        super().__init__(f"record {record_index}: {reason}")
        self.record_index = record_index
        self.reason = reason


class _GzipEndedEarly(Exception):
    pass


def _inflate(path: str | os.PathLike[str], chunk_size: int) -> Iterator[bytes]:
    """The decompressed content of a GZIP file, piece by piece (several members allowed).

    Raises ``zlib.error`` for data that is not GZIP or is corrupt, ``_GzipEndedEarly`` if the
    file stops before the end of the stream.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # expect a gzip header
    with open(path, "rb") as file:
        while compressed := file.read(chunk_size):
            inflated = inflater.decompress(compressed)
            # a file may hold several gzip members back to back (like `cat a.gz b.gz`)
            while inflater.eof and inflater.unused_data:
                rest = inflater.unused_data
                inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                inflated += inflater.decompress(rest)
            yield inflated
    if not inflater.eof:
        raise _GzipEndedEarly


def _run_ahead(pieces: Iterator[bytes], depth: int) -> Iterator[bytes]:
    """Iterate ``pieces`` in a background thread, up to ``depth`` pieces ahead of the caller.

    Reading and inflating release the GIL, so they run on another core while the caller parses
    the previous pieces. An exception in the thread is raised here, in its place in the stream.
    """
    queue_: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()  # set when the caller stops early

    def put(item: tuple[bytes | None, BaseException | None]) -> bool:
        """Queue an item; False if the caller has stopped."""
        while not stop.is_set():
            try:
                queue_.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for piece in pieces:
                if not put((piece, None)):
                    return
            put((None, None))
        except BaseException as err:  # handed to the caller
            put((None, err))

    thread = threading.Thread(target=produce, name="inflate", daemon=True)
    thread.start()
    try:
        while True:
            piece, error = queue_.get()
            if error is not None:
                raise error
            if piece is None:
                return
            yield piece
    finally:
        stop.set()
        thread.join()


def read_gzip_tfrecords(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield the data of each record of a GZIP-compressed TFRecord file, in order.

    Streams the file (a background thread inflates up to 4 pieces of ``chunk_size``
    compressed bytes ahead) and checks both CRCs of every record. Raises ``TFRecordError`` for
    a file that is not GZIP, a corrupt or truncated GZIP stream, a CRC mismatch or a file
    ending inside a record.
    """
    pending = b""  # inflated bytes not yet consumed
    index = 0
    pieces = _run_ahead(_inflate(path, chunk_size), depth=4)
    try:
        for inflated in pieces:
            pending = pending + inflated if pending else inflated
            pos = 0
            while len(pending) - pos >= _HEADER.size:
                length, length_crc = _HEADER.unpack_from(pending, pos)
                if masked_crc32c(pending[pos : pos + 8]) != length_crc:
                    raise TFRecordError(
                        index, "CRC mismatch in the record length (not a TFRecord file or corrupt)"
                    )
                start = pos + _HEADER.size
                end = start + length
                if end + _FOOTER.size > len(pending):
                    break  # the rest of this record is in the next piece
                data = pending[start:end]
                if masked_crc32c(data) != _FOOTER.unpack_from(pending, end)[0]:
                    raise TFRecordError(index, "CRC mismatch in the record data (corrupt)")
                yield data
                index += 1
                pos = end + _FOOTER.size
            pending = pending[pos:]
    except zlib.error as err:
        what = "not a GZIP file" if index == 0 and not pending else "corrupt GZIP data"
        raise TFRecordError(index, f"{what} ({err})") from err
    except _GzipEndedEarly:
        if index == 0 and not pending and os.path.getsize(path) == 0:
            raise TFRecordError(0, "the file is empty") from None
        raise TFRecordError(index, "the GZIP stream ends early (the file is truncated)") from None
    finally:
        pieces.close()  # stops the background thread if the caller stopped early
    if pending:
        raise TFRecordError(index, f"the file ends inside a record ({len(pending)} bytes left)")


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    length_crc = struct.pack("<I", masked_crc32c(length))
    return length + length_crc + data + _FOOTER.pack(masked_crc32c(data))


def write_gzip_tfrecords(
    path: str | os.PathLike[str], records: Iterable[bytes], compresslevel: int = 6
) -> int:
    """Write records as a GZIP-compressed TFRecord file (level 6 like TensorFlow); count them."""
    count = 0
    with gzip.open(path, "wb", compresslevel=compresslevel) as out:
        for data in records:
            out.write(frame_record(data))
            count += 1
    return count


def _build_example_class() -> type:
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tianshou_offline/tf_example.proto", package="tensorflow", syntax="proto3"
    )

    def add_message(name: str, fields: Sequence[tuple[str, int, int, int, str]]):
        message = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:  # message-typed fields only
                added.type_name = type_name
        return message

    repeated, optional = field.LABEL_REPEATED, field.LABEL_OPTIONAL
    add_message("BytesList", [("value", 1, field.TYPE_BYTES, repeated, "")])
    add_message("FloatList", [("value", 1, field.TYPE_FLOAT, repeated, "")])
    add_message("Int64List", [("value", 1, field.TYPE_INT64, repeated, "")])
    feature = add_message(
        "Feature",
        [
            ("bytes_list", 1, field.TYPE_MESSAGE, optional, ".tensorflow.BytesList"),
            ("float_list", 2, field.TYPE_MESSAGE, optional, ".tensorflow.FloatList"),
            ("int64_list", 3, field.TYPE_MESSAGE, optional, ".tensorflow.Int64List"),
        ],
    )
    feature.oneof_decl.add(name="kind")
    for member in feature.field:
        member.oneof_index = 0
    features = add_message(
        "Features",
        [("feature", 1, field.TYPE_MESSAGE, repeated, ".tensorflow.Features.FeatureEntry")],
    )
    entry = features.nested_type.add(name="FeatureEntry")  # what protoc makes of a map<>
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=optional)
    entry.field.add(
        name="value",
        number=2,
        type=field.TYPE_MESSAGE,
        label=optional,
        type_name=".tensorflow.Feature",
    )
    entry.options.map_entry = True
    add_message("Example", [("features", 1, field.TYPE_MESSAGE, optional, ".tensorflow.Features")])

    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


Example = _build_example_class()


def encode_example(features: Mapping[str, Sequence[bytes | int | float]]) -> bytes:
    """Serialize a ``tf.train.Example``; each value list's kind comes from its first element.

    ``bytes`` -> bytes_list, ``int`` -> int64_list, ``float`` -> float_list (pass 0.0, not 0).
    """
    example = Example()
    for key, values in features.items():
        feature = example.features.feature[key]
        if isinstance(values[0], bytes):
            feature.bytes_list.value.extend(values)
        elif isinstance(values[0], float):
            feature.float_list.value.extend(values)
        else:
            feature.int64_list.value.extend(int(v) for v in values)
    return example.SerializeToString()
