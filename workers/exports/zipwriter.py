"""A one-pass zip writer whose caller supplies each entry's CRC-32.

The standard library's ``zipfile`` computes the CRC on the thread that
writes, so reading, checksumming and writing cannot overlap. Here the
export computes the CRC on a reading thread, and a stored member can be
copied straight to the output's file descriptor. The records are the ones
``zipfile`` of Python 3.11 writes, with the same header versions, UTF-8
flag, ZIP64 limit and end records.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import BinaryIO

ZIP_STORED = 0
ZIP_DEFLATED = 8

# Sizes and offsets above this use ZIP64 records. It is the signed 32-bit
# limit, as in zipfile, because some readers treat these fields as signed.
ZIP64_LIMIT = (1 << 31) - 1
ZIP_FILECOUNT_LIMIT = 0xFFFF
DEFAULT_VERSION = 20
ZIP64_VERSION = 45
UNIX_SYSTEM = 3

FLAG_DATA_DESCRIPTOR = 0x08
FLAG_UTF8 = 0x800

LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
END_RECORD = struct.Struct("<4s4H2LH")
ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")
ZIP64_END_LOCATOR = struct.Struct("<4sLQL")
DATA_DESCRIPTOR = struct.Struct("<4sLLL")
ZIP64_DATA_DESCRIPTOR = struct.Struct("<4sLQQ")


def dos_date_time(date_time: tuple) -> tuple[int, int]:
    """Return ``(date, time)`` in MS-DOS format for a 1980-2107 date."""
    year, month, day, hour, minute, second = date_time
    return (year - 1980) << 9 | month << 5 | day, hour << 11 | minute << 5 | second // 2


def encode_name(name: str) -> tuple[bytes, int]:
    """Return the stored file name and the flag bits its encoding needs."""
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), FLAG_UTF8


class _Entry:
    """One member's header fields, kept for its central directory record."""

    def __init__(self, name: bytes, flags: int, method: int, date_time: tuple, mode: int,
                 offset: int, zip64: bool):  # fmt: skip
        self.name = name
        self.flags = flags
        self.method = method
        self.date, self.time = dos_date_time(date_time)
        self.external_attr = (mode & 0xFFFF) << 16
        self.offset = offset
        self.zip64 = zip64
        self.crc = 0
        self.file_size = 0
        self.compress_size = 0


class EntryWriter:
    """Writer of one member's data, returned by ZipWriter.open_entry."""

    def __init__(self, archive: ZipWriter, entry: _Entry):
        self._archive = archive
        self._entry = entry
        self._compressor = (
            zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            if entry.method == ZIP_DEFLATED
            else None
        )

    def write(self, data, crc: int) -> None:
        """Append ``data``. ``crc`` is the CRC-32 of all bytes so far, ``data`` included."""
        size = len(data)
        self._entry.file_size += size
        self._entry.crc = crc
        if self._compressor is not None:
            data = self._compressor.compress(data)
            size = len(data)
        self._entry.compress_size += size
        self._archive._write(data)

    def output_fd(self) -> int | None:
        """Return the output's file descriptor, positioned for this member's next byte.

        Returns None unless the member is stored and the output is a seekable
        file with a descriptor. Report bytes written to it with
        ``wrote_directly`` before any other call.
        """
        if self._compressor is not None or self._archive._fd is None:
            return None
        self._archive._out.flush()
        os.lseek(self._archive._fd, self._archive._offset, os.SEEK_SET)
        return self._archive._fd

    def wrote_directly(self, count: int, crc: int) -> None:
        """Record ``count`` bytes written to ``output_fd``, and the CRC-32 of all so far."""
        self._entry.file_size += count
        self._entry.compress_size += count
        self._entry.crc = crc
        self._archive._offset += count

    def close(self) -> None:
        if self._compressor is not None:
            tail = self._compressor.flush()
            self._entry.compress_size += len(tail)
            self._archive._write(tail)
            self._compressor = None
        self._archive._finish_entry(self._entry)

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        # A member that failed midway is left unfinished, because the
        # archive is abandoned with it.
        if error_type is None:
            self.close()


class ZipWriter:
    """Write members one after another into ``out``, then the central directory.

    On a seekable ``out`` each local header is rewritten with the CRC and
    sizes once its data is written, as ``zipfile`` does. Otherwise a data
    descriptor follows each member's data. ``close`` writes the central
    directory but does not close ``out``.
    """

    def __init__(self, out: BinaryIO):
        self._out = out
        try:
            self._offset = out.tell()
            self._seekable = out.seekable()
        except (AttributeError, OSError):
            self._offset = 0
            self._seekable = False
        # A descriptor lets stored members be copied in the kernel. Every
        # member's end seeks ``out`` to an absolute offset, which brings a
        # buffered ``out`` back in step with the descriptor.
        self._fd: int | None = None
        if self._seekable:
            try:
                self._fd = out.fileno()
            except (AttributeError, OSError, io.UnsupportedOperation):
                self._fd = None
        self._entries: list[_Entry] = []
        self._open_entry: _Entry | None = None

    def _write(self, data) -> None:
        self._out.write(data)
        self._offset += len(data)

    def open_entry(self, name: str, date_time: tuple, method: int, size: int,
                   mode: int = 0o644) -> EntryWriter:  # fmt: skip
        """Write a member's local header and return the writer of its data.

        ``size`` is the expected uncompressed size. It decides whether the
        member gets ZIP64 sizes, and a member that ends up larger than
        planned raises ValueError when it is finished without them.
        """
        if self._open_entry is not None:
            raise ValueError("the previous zip entry is still open; close it first")
        if method not in (ZIP_STORED, ZIP_DEFLATED):
            raise ValueError(f"unsupported compression method {method}")
        encoded, flags = encode_name(name)
        if not self._seekable:
            flags |= FLAG_DATA_DESCRIPTOR
        # Deflate can grow incompressible data a little, hence the margin.
        zip64 = size * (1.05 if method == ZIP_DEFLATED else 1) > ZIP64_LIMIT
        entry = _Entry(encoded, flags, method, date_time, mode, self._offset, zip64)
        self._open_entry = entry
        self._write(self._local_header(entry))
        return EntryWriter(self, entry)

    def write_bytes(self, name: str, data: bytes, date_time: tuple, method: int) -> None:
        """Write a whole member from memory."""
        with self.open_entry(name, date_time, method, len(data)) as member:
            member.write(data, zlib.crc32(data))

    def _local_header(self, entry: _Entry) -> bytes:
        crc, file_size, compress_size = entry.crc, entry.file_size, entry.compress_size
        if entry.flags & FLAG_DATA_DESCRIPTOR:
            # The descriptor after the data gives these.
            crc = file_size = compress_size = 0
        extra = b""
        version = DEFAULT_VERSION
        if entry.zip64:
            extra = struct.pack("<HHQQ", 1, 16, file_size, compress_size)
            file_size = compress_size = 0xFFFFFFFF
            version = ZIP64_VERSION
        header = LOCAL_HEADER.pack(
            b"PK\003\004", version, 0, entry.flags, entry.method, entry.time, entry.date,
            crc, compress_size, file_size, len(entry.name), len(extra),
        )  # fmt: skip
        return header + entry.name + extra

    def _finish_entry(self, entry: _Entry) -> None:
        if not entry.zip64 and max(entry.file_size, entry.compress_size) > ZIP64_LIMIT:
            raise ValueError(
                f"zip entry {entry.name!r} has {entry.file_size} bytes, too many for an "
                "entry opened without ZIP64; pass its real size to open_entry"
            )
        if entry.flags & FLAG_DATA_DESCRIPTOR:
            layout = ZIP64_DATA_DESCRIPTOR if entry.zip64 else DATA_DESCRIPTOR
            descriptor = layout.pack(
                b"PK\007\010", entry.crc, entry.compress_size, entry.file_size
            )
            self._write(descriptor)
        else:
            end = self._offset
            self._out.seek(entry.offset)
            self._out.write(self._local_header(entry))
            self._out.seek(end)
        self._entries.append(entry)
        self._open_entry = None

    def close(self) -> None:
        """Write the central directory and the end records."""
        if self._open_entry is not None:
            raise ValueError("a zip entry is still open; close it before the archive")
        start = self._offset
        for entry in self._entries:
            self._write(self._central_header(entry))
        self._write_end_records(start, self._offset - start)

    def _central_header(self, entry: _Entry) -> bytes:
        zip64_fields = []
        file_size, compress_size, offset = entry.file_size, entry.compress_size, entry.offset
        if file_size > ZIP64_LIMIT or compress_size > ZIP64_LIMIT:
            zip64_fields += [file_size, compress_size]
            file_size = compress_size = 0xFFFFFFFF
        if offset > ZIP64_LIMIT:
            zip64_fields.append(offset)
            offset = 0xFFFFFFFF
        extra = b""
        version = DEFAULT_VERSION
        if zip64_fields:
            count = len(zip64_fields)
            extra = struct.pack(f"<HH{count}Q", 1, 8 * count, *zip64_fields)
            version = ZIP64_VERSION
        header = CENTRAL_HEADER.pack(
            b"PK\001\002", version, UNIX_SYSTEM, version, 0, entry.flags, entry.method,
            entry.time, entry.date, entry.crc, compress_size, file_size,
            len(entry.name), len(extra), 0, 0, 0, entry.external_attr, offset,
        )  # fmt: skip
        return header + entry.name + extra

    def _write_end_records(self, start: int, size: int) -> None:
        count = len(self._entries)
        if count > ZIP_FILECOUNT_LIMIT or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
            record_offset = self._offset
            self._write(ZIP64_END_RECORD.pack(
                b"PK\006\006", ZIP64_END_RECORD.size - 12, ZIP64_VERSION, ZIP64_VERSION,
                0, 0, count, count, size, start,
            ))  # fmt: skip
            self._write(ZIP64_END_LOCATOR.pack(b"PK\006\007", 0, record_offset, 1))
            count = min(count, ZIP_FILECOUNT_LIMIT)
            size = min(size, 0xFFFFFFFF)
            start = min(start, 0xFFFFFFFF)
        self._write(END_RECORD.pack(b"PK\005\006", 0, 0, count, count, size, start, 0))
        self._out.flush()
