"""Minimal safetensors reader/writer on top of numpy.

The `safetensors` package is not available here, so this module implements the
format directly:

    [8 bytes]  little-endian u64 N: length of the JSON header in bytes
    [N bytes]  JSON header, padded with trailing spaces so N % 8 == 0:
               {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
                ..., "__metadata__": {"key": "value"}}   (metadata optional)
    [rest]     raw little-endian tensor data; data_offsets are relative to the
               start of this region, [begin, end) in bytes.

Scalars have shape [] and occupy one element.
"""

import json
import struct

import numpy as np

# safetensors dtype tag -> little-endian numpy dtype.
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_TAGS = {(dt.kind, dt.itemsize): tag for tag, dt in _DTYPES.items()}

# Refuse absurd header lengths instead of trying to allocate them.
_MAX_HEADER = 100 * 1024 * 1024


def _tag_for(dtype):
    dtype = np.dtype(dtype)
    tag = _TAGS.get((dtype.kind, dtype.itemsize))
    if tag is None:
        raise TypeError(f"safetensors: unsupported dtype {dtype}")
    return tag


def load(path):
    """Read a safetensors file and return {name: np.ndarray} (writable copies).

    Metadata, if any, is available through load_with_metadata.
    """
    tensors, _ = load_with_metadata(path)
    return tensors


def load_with_metadata(path):
    """Read a safetensors file; return ({name: np.ndarray}, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: file too short for a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise ValueError(f"{path}: bad header length {n}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    data = memoryview(raw)[8 + n:]

    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        tag = info["dtype"]
        if tag not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r}: unsupported dtype {tag}")
        dtype = _DTYPES[tag]
        shape = [int(d) for d in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64))  # prod([]) == 1 for scalars
        if not (0 <= begin <= end <= len(data)) or end - begin != count * dtype.itemsize:
            raise ValueError(
                f"{path}: tensor {name!r}: data_offsets {[begin, end]} do not fit "
                f"shape {shape} of {tag} (data region {len(data)} bytes)")
        arr = np.frombuffer(data[begin:end], dtype=dtype, count=count)
        # Copy so the result is writable, native-endian and independent of `raw`.
        tensors[name] = arr.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return tensors, metadata


def save(path, tensors, metadata=None):
    """Write {name: array-like} to `path` in safetensors format.

    Tensors are laid out in sorted name order. `metadata`, if given, must map
    str -> str and is stored under "__metadata__".
    """
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise ValueError("tensor name '__metadata__' is reserved")
        arr = np.asarray(tensors[name])
        tag = _tag_for(arr.dtype)
        buf = np.ascontiguousarray(arr, dtype=_DTYPES[tag]).tobytes()
        header[name] = {
            "dtype": tag,
            "shape": [int(d) for d in arr.shape],
            "data_offsets": [offset, offset + len(buf)],
        }
        chunks.append(buf)
        offset += len(buf)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("safetensors metadata must map str -> str")
        header["__metadata__"] = dict(metadata)

    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for buf in chunks:
            f.write(buf)
