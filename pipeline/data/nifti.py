"""NIfTI reading by content (never by suffix) and writing with exact geometry.

Every read is eager: the whole file is decompressed and the voxel data materialised, so a
truncated or corrupt file is found at verification, not halfway through training.

Reading is bounded (row F7): gzip is decompressed as a stream that stops at the size the header
declares plus :data:`TRAILING_SLACK_BYTES`, and a header declaring more than ``max_decoded_bytes``
is refused before any large allocation. A "gzip bomb" (a small file that inflates far past its
header's size) therefore costs no more memory than an honest file of the declared shape.
Inflating uses ISA-L (``isal.igzip``, a drop-in for Python's ``gzip``: the same bytes, about twice
as fast on CT-sized files) and falls back to ``gzip`` where ``isal`` is not installed.
Peak memory of a read is at most about 2x the decoded voxel data (the bytes plus the array;
a scaled or float file adds one float copy: about 3x), checked by a test with ``tracemalloc``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.data.labels import MAX_LABEL_ID, label_dtype, present_values
from pipeline.errors import InvalidInputError
from pipeline.io_utils import atomic_path

try:  # ISA-L inflate: byte-identical to zlib's, faster; its corrupt-stream error is its own type
    from isal import igzip as gzip_reader
    from isal.igzip_lib import IsalError as InflateError
except ImportError:  # pragma: no cover - isal is a dependency; zlib still reads every file
    gzip_reader, InflateError = gzip, zlib.error

GZIP_MAGIC = b"\x1f\x8b"
TRAILING_SLACK_BYTES = 1 << 16  # extensions and padding past the declared data are allowed up to this much
HEADER_BYTES = 540  # NIfTI-2 header; NIfTI-1 needs 348
CHUNK_BYTES = 1 << 20
DEFAULT_MAX_DECODED_BYTES = 8 << 30


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies in the world: a 4x4 RAS+ affine (nibabel convention) and a 3D shape."""

    affine: np.ndarray
    shape: tuple[int, int, int]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along each array axis, in mm (column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """World (RAS, mm) position of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit world directions of the array axes."""
        return self.affine[:3, :3] / self.spacing

    def orthonormality_error(self) -> float:
        """Largest absolute deviation of direction^T @ direction from the identity (0 for a rigid grid)."""
        d = self.direction
        return float(np.abs(d.T @ d - np.eye(3)).max())

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict."""
        return {"affine": self.affine.tolist(), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, payload: dict) -> Geometry:
        """Inverse of :meth:`to_json`."""
        return cls(np.asarray(payload["affine"], dtype=np.float64), tuple(int(s) for s in payload["shape"]))


@dataclass(frozen=True)
class LoadedNifti:
    """A fully read NIfTI file."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    compressed: bool
    trailing_bytes: int = 0  # bytes found past the declared data (at least this many; reading stopped there)
    stored_header: nib.Nifti1Header | None = None  # as on disk: nibabel fixes pixdim 0 -> 1 and moves scaling out of it

    @property
    def stored(self) -> nib.Nifti1Header:
        """The header as stored on disk (falls back to nibabel's)."""
        return self.stored_header if self.stored_header is not None else self.header

    @property
    def geometry(self) -> Geometry:
        """Geometry of the first three (spatial) axes."""
        return Geometry(self.affine, tuple(int(s) for s in self.data.shape[:3]))

    def suffix_mismatch(self) -> str | None:
        """Describe a mismatch between the file's suffix and its content (row F3), or ``None``."""
        named_gz = self.path.name.endswith(".gz")
        if self.compressed and not named_gz:
            return "content is gzip-compressed but the name does not end in .gz"
        if not self.compressed and named_gz:
            return "content is plain (uncompressed) NIfTI but the name ends in .gz"
        return None


def read_nifti(path: Path, case: str | None = None, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> LoadedNifti:
    """Read a NIfTI-1/2 file completely, choosing gzip or plain from the bytes, not the suffix.

    Args:
        path: the file.
        case: case id for error messages.
        max_decoded_bytes: largest voxel data a header may declare (``checks.max_decoded_gib``).

    Returns:
        The data (scaling applied, native dtype kept for integers) with affine and header.

    Raises:
        InvalidInputError: directory, unreadable, empty, not NIfTI (F2), truncated/corrupt (F1),
            a declared size over the limit (F7), or a non-scalar voxel type such as RGB (F8).
    """
    path = Path(path)
    raw, compressed, trailing = _read_bounded(path, case, max_decoded_bytes)
    image_class = _nifti_class(raw, path, case)
    try:
        with _quiet_nibabel():
            image = image_class.from_bytes(raw)
    except Exception as exc:  # nibabel raises many types for bad headers
        raise InvalidInputError(path, f"not a valid NIfTI header ({exc})", case, "F2") from None
    _check_data_length(image, len(raw), path, case)
    _check_scalar(image, path, case)
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:
        raise InvalidInputError(path, f"cannot decode voxel data ({exc})", case, "F1") from None
    stored = image_class.header_class.from_fileobj(io.BytesIO(raw[:HEADER_BYTES]), check=False)
    return LoadedNifti(path, data, np.asarray(image.affine, dtype=np.float64), image.header, compressed, trailing, stored)


@contextlib.contextmanager
def _quiet_nibabel():
    """nibabel logs the header fixes it applies; our checks report those defects themselves, with the file named."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_bounded(path: Path, case: str | None, max_decoded_bytes: int) -> tuple[bytes, bool, int]:
    """Return (the bytes up to the declared size + slack, whether gzip, bytes found past that)."""
    if path.is_dir():
        raise InvalidInputError(path, "is a directory, not a NIfTI file", case, "F2")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
            if not magic:
                raise InvalidInputError(path, "empty file (0 bytes): not a NIfTI file", case, "F2")
            fh.seek(0)
            if magic == GZIP_MAGIC:
                raw, trailing, compressed = _inflate_bounded(fh, path, case, max_decoded_bytes)
            else:
                raw, trailing, compressed = _read_plain_bounded(fh, path, case, max_decoded_bytes)
            return raw, compressed, trailing
    except FileNotFoundError:
        raise InvalidInputError(path, "file does not exist", case, "F6") from None
    except OSError as exc:  # permissions, symlink loops (ELOOP), I/O errors
        raise InvalidInputError(path, f"cannot read: {exc.strerror or exc}", case, "F2") from None


def _read_plain_bounded(fh, path: Path, case: str | None, limit: int) -> tuple[bytes, int, bool]:
    return (*_read_declared(fh, path, case, limit), False)


def _inflate_bounded(fh, path: Path, case: str | None, limit: int) -> tuple[bytes, int, bool]:
    """Inflate a (possibly multi-member) gzip stream only up to the declared size + slack."""
    try:
        with gzip_reader.GzipFile(fileobj=fh) as stream:
            return (*_read_declared(stream, path, case, limit), True)
    except (EOFError, gzip.BadGzipFile, zlib.error, InflateError) as exc:
        size = path.stat().st_size
        raise InvalidInputError(path, f"truncated or corrupt gzip stream ({size} bytes on disk): {exc}", case, "F1") from None


def _read_declared(stream, path: Path, case: str | None, limit: int) -> tuple[bytes, int]:
    """Read the header, then the voxel data it declares (+ slack); count what lies past it without keeping it."""
    needed = _declared_size(stream.read(HEADER_BYTES), path, case, limit)
    stream.seek(0)  # re-reads 540 bytes (gzip: re-inflates them); joining head + body would copy the volume
    raw = stream.read(needed + TRAILING_SLACK_BYTES)
    trailing = 0
    while block := stream.read(CHUNK_BYTES):  # counted in chunks, never held: a bomb stays cheap
        trailing += len(block)
        if trailing > 16 * CHUNK_BYTES:
            break
    return raw, trailing


def _declared_size(head: bytes, path: Path, case: str | None, limit: int) -> int:
    """Bytes the header says the file holds (offset + voxel data); refuse a size over ``limit`` (F7)."""
    image_class = _nifti_class(head, path, case)
    try:
        header = image_class.header_class.from_fileobj(io.BytesIO(head), check=False)
        shape, itemsize = header.get_data_shape(), header.get_data_dtype().itemsize
        offset = int(header.get_data_offset())
    except Exception as exc:
        raise InvalidInputError(path, f"not a valid NIfTI header ({exc})", case, "F2") from None
    data_bytes = int(np.prod(shape, dtype=np.float64)) * itemsize
    if data_bytes > limit:
        raise InvalidInputError(
            path,
            f"header declares shape {tuple(shape)} of {header.get_data_dtype()} = {data_bytes / 2**30:.2f} GiB of voxel data, "
            f"over the limit of {limit / 2**30:.2f} GiB (checks.max_decoded_gib); refused before decompression",
            case,
            "F7",
        )
    return offset + data_bytes


def _nifti_class(raw: bytes, path: Path, case: str | None) -> type:
    if len(raw) >= 348 and raw[344:348] in (b"n+1\x00", b"ni1\x00"):
        if raw[344:348] == b"ni1\x00":
            raise InvalidInputError(path, "NIfTI header/image pair (.hdr/.img) is not supported", case, "F2")
        return nib.Nifti1Image
    if len(raw) >= 540 and raw[4:8] == b"n+2\x00":
        return nib.Nifti2Image
    raise InvalidInputError(path, "not a NIfTI file (no NIfTI-1/2 magic in the header)", case, "F2")


def _check_data_length(image: nib.Nifti1Image, available: int, path: Path, case: str | None) -> None:
    header = image.header
    offset = int(header.get_data_offset())
    needed = offset + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    if available < needed:
        raise InvalidInputError(
            path,
            f"truncated: header declares shape {tuple(header.get_data_shape())} of "
            f"{header.get_data_dtype()} ({needed} bytes with the header) but the file holds {available} bytes",
            case,
            "F1",
        )


def _check_scalar(image: nib.Nifti1Image, path: Path, case: str | None) -> None:
    dtype = image.header.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise InvalidInputError(
            path, f"voxel type {dtype} (e.g. RGB or complex) is not a scalar image; convert it to one grey channel", case, "F8"
        )


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype: np.dtype | type | None = None) -> None:
    """Write a NIfTI file atomically with qform and sform both set to ``affine`` (code 1, mm).

    The header carries no free text (``descrip``, ``aux_file``, ``intent_name`` are empty), so
    nothing beyond geometry and voxel values leaves the pipeline.
    """
    array = np.asarray(data, dtype=dtype) if dtype is not None else np.asarray(data)
    image = nib.Nifti1Image(array, affine)
    header = image.header
    header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    header["descrip"] = b""
    header["aux_file"] = b""
    header["intent_name"] = b""
    with atomic_path(Path(path)) as tmp:
        nib.save(image, tmp)


def nifti_stem(path: Path) -> str:
    """Return the file name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def squeeze_to_3d(loaded: LoadedNifti, case: str | None = None) -> np.ndarray:
    """Return the data as a 3D volume, squeezing a singleton 4th axis (row G8).

    Raises:
        InvalidInputError: 2D data, a singleton spatial axis, or a non-singleton 4th axis.
    """
    data = loaded.data
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or min(data.shape) < 2:
        raise InvalidInputError(
            loaded.path, f"expected a 3D volume (x, y, z) with every axis > 1, got shape {loaded.data.shape}", case, "G8"
        )
    return data


def channel_volumes(loaded: LoadedNifti, channels: int = 1, case: str | None = None) -> list[np.ndarray]:
    """The 3D volume of each channel a file holds: one (:func:`squeeze_to_3d`), or ``channels`` along its 4th axis, as
    a multi-modal MSD image stores them (rows G8).

    Raises:
        InvalidInputError: a shape that is not a 3D volume, or not ``(x, y, z, channels)`` when several are expected.
    """
    if channels == 1:
        return [squeeze_to_3d(loaded, case)]
    data = loaded.data
    if data.ndim != 4 or data.shape[3] != channels or min(data.shape[:3]) < 2:
        reason = (
            f"expected a 4D image (x, y, z, {channels}) holding one volume for each of the {channels} channels "
            f"(dataset.json's 'modality', or the models' inputs), got shape {data.shape}"
        )
        raise InvalidInputError(loaded.path, reason, case, "G8")
    return [data[..., c] for c in range(channels)]


def check_integer_labels(loaded: LoadedNifti, case: str | None = None) -> None:
    """Accept float label storage only when every value is an exact integer (row V2).

    Raises:
        InvalidInputError: NaN/Inf (V1) or non-integer values (V3), with examples.
    """
    data = loaded.data
    if not np.issubdtype(data.dtype, np.floating):
        return
    finite = np.isfinite(data)
    if not finite.all():
        raise InvalidInputError(loaded.path, f"{int((~finite).sum())} NaN/Inf voxels in a label map", case, "V1")
    fractional = data[data != np.rint(data)]
    if fractional.size:
        examples = ", ".join(repr(float(v)) for v in np.unique(fractional)[:5])
        raise InvalidInputError(loaded.path, f"non-integer label values in {fractional.size} voxels, e.g. {examples}", case, "V3")


def label_array(loaded: LoadedNifti, declared: set[int], case: str | None = None) -> np.ndarray:
    """Return a label map as a 3D uint8 array (uint16 when an id exceeds 255) after checking its values.

    Raises:
        InvalidInputError: bad shape (G8), NaN/Inf (V1), non-integer (V3) or undeclared values (V4).
    """
    data = squeeze_to_3d(loaded, case)
    check_integer_labels(loaded, case)
    found = set(present_values(data))
    if max(declared | found, default=0) > MAX_LABEL_ID or min(found, default=0) < 0:
        raise InvalidInputError(
            loaded.path, f"label values {sorted(found)[:3]}...{sorted(found)[-3:]} outside 0..{MAX_LABEL_ID}", case, "V4"
        )
    if not found <= declared:
        raise InvalidInputError(
            loaded.path,
            f"label values {sorted(found - declared)} are not declared; expected {sorted(declared)}, found {sorted(found)}",
            case,
            "V4",
        )
    return data.astype(label_dtype(max(declared | found, default=0) + 1))
