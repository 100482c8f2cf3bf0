//! Files the elements read. They are named by properties, so a FIFO, a device or a link
//! put in a file's place must neither hang the networking thread, nor exhaust memory, nor
//! be followed: every read goes through here, regular files only, opened with O_NOFOLLOW
//! and O_NONBLOCK, and capped in size.

use std::fs::File;
use std::io::{Error, ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A certificate chain, a key, or the sender's kept identity.
pub const MAX_PEM: u64 = 1 << 20;
/// A CA file: Debian's whole system bundle is about 220 kB.
pub const MAX_CA_FILE: u64 = 4 << 20;
/// A known_hosts file: some 90 bytes a sender, so about 10,000 senders.
pub const MAX_KNOWN_HOSTS: u64 = 1 << 20;

/// Opens `path` for reading if it is a regular file of at most `max` bytes.
pub fn open(path: &Path, max: u64) -> std::io::Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::new(
                ErrorKind::InvalidInput,
                "it is a symbolic link: name the file it points to",
            ),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it is not a regular file (a folder, FIFO, socket or device)",
        ));
    }
    if meta.len() > max {
        return Err(too_big(max));
    }
    Ok(file)
}

/// The contents of `path`, a regular file of at most `max` bytes (see [`open`]).
pub fn read(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    // It may have grown since it was measured.
    open(path, max)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big(max));
    }
    Ok(bytes)
}

/// A name for `file` that opens the very file already open, for libraries that take a
/// path (BoringSSL's loaders): no one can swap in another file between our checks and
/// their open.
pub fn path_of(file: &File) -> String {
    format!("/proc/self/fd/{}", file.as_raw_fd())
}

fn too_big(max: u64) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        format!("it is larger than {max} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read_and_nothing_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read(&file, 5).unwrap(), b"12345");
        assert!(read(&file, 4)
            .unwrap_err()
            .to_string()
            .contains("larger than 4"));

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read(&link, 5)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));

        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        // With no writer, a blocking open would wait for ever.
        assert!(read(&fifo, 5)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        for special in ["/dev/zero", "/tmp"] {
            let e = read(Path::new(special), 5).unwrap_err();
            assert!(
                e.to_string().contains("not a regular file"),
                "{special}: {e}"
            );
        }
        assert_eq!(
            read(&dir.path().join("none"), 5).unwrap_err().kind(),
            ErrorKind::NotFound
        );

        let opened = open(&file, 5).unwrap();
        assert_eq!(std::fs::read(path_of(&opened)).unwrap(), b"12345");
    }
}
