"""Archives built for real (tarfile, zipfile) from member specs, for the unpacking tests.

A member spec is a tuple (kind, name, payload, mode): tar_file / tar_dir / tar_symlink / tar_hardlink /
tar_special make them, make_tar writes them, names exactly as given (`../x`, `/abs` too); zip_entry and
make_zip do the same for zip, with unix modes (and symlinks) in external_attr.
"""

import io
import stat
import tarfile
import zipfile


def tar_file(name, data=b"", mode=0o644):
    """A regular file member."""
    return ("file", name, data, mode)


def tar_dir(name, mode=0o755):
    """A directory member."""
    return ("dir", name, None, mode)


def tar_symlink(name, target):
    """A symbolic link member pointing at target."""
    return ("sym", name, target, 0o777)


def tar_hardlink(name, target):
    """A hard link member to target (a path relative to the archive root)."""
    return ("lnk", name, target, 0o644)


def tar_special(name, kind):
    """A device or fifo member: kind is chr, blk or fifo."""
    return (kind, name, None, 0o644)


def make_tar(path, members, mode="w:gz"):
    """Write a tarball with the given member specs; return its path."""
    types = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE,
             "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
    with tarfile.open(path, mode) as archive:
        for kind, name, payload, perm in members:
            info = tarfile.TarInfo(name)
            info.mode = perm
            info.mtime = 1_700_000_000
            if kind == "file":
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
                continue
            info.type = types[kind]
            if kind in ("sym", "lnk"):
                info.linkname = payload
            archive.addfile(info)
    return str(path)


def zip_entry(name, data=b"", mode=0o644, kind=stat.S_IFREG):
    """A zip entry spec: kind is stat.S_IFREG, S_IFDIR, S_IFLNK (data = the target) or a device type."""
    return (name, data, mode, kind)


def make_zip(path, entries):
    """Write a zip with unix modes in external_attr; return its path."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, perm, kind in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 5))
            info.external_attr = (kind | perm) << 16
            if kind == stat.S_IFDIR:
                info.external_attr |= 0x10  # MS-DOS directory flag
            archive.writestr(info, data)
    return str(path)


def corrupt_zip_crc(path, name):
    """Make the stored CRC of entry name wrong (local header zeroed, central directory flipped): a damaged zip."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    data[info.header_offset + 14: info.header_offset + 18] = b"\0\0\0\0"
    central = data.rfind(b"PK\x01\x02")
    data[central + 16: central + 20] = (info.CRC ^ 0xFFFFFFFF).to_bytes(4, "little")
    with open(path, "wb") as fh:
        fh.write(bytes(data))
