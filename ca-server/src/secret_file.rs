//! Reading files that hold secrets (CA keys, the TLS key, the database
//! password, the webhook secret, the HSM PIN): one check for all of them.
//! A secret file must be a regular file, not a symbolic link, and neither
//! readable nor writable by group or others. The mode is checked on the
//! open file, so what is checked is what is read.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Why a secret file was not read. `what` names the setting ("CA key",
/// "server.tls_key", ...), so the message says which file is at fault.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{what} {} does not exist", .path.display())]
    Missing { what: &'static str, path: PathBuf },
    #[error("{what} {} is a symbolic link; point the config at the real file", .path.display())]
    Symlink { what: &'static str, path: PathBuf },
    #[error("{what} {} is not a regular file", .path.display())]
    NotAFile { what: &'static str, path: PathBuf },
    #[error(
        "{what} {} is readable by group or others (mode {mode:o}); run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    Permissions {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("cannot read {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Files larger than this are not secrets we know how to use.
const MAX_LEN: u64 = 1 << 20;

/// Read the secret file at `path` after checking it (see the module doc).
pub fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, SecretFileError> {
    let err = |make: fn(&'static str, PathBuf) -> SecretFileError| make(what, path.to_owned());
    let io = |source: std::io::Error| SecretFileError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    // Classify the path itself (never following a link), then check that
    // the file opened is the one classified, so a swap in between is caught.
    let before = std::fs::symlink_metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err(|what, path| SecretFileError::Missing { what, path }),
        _ => io(e),
    })?;
    if before.file_type().is_symlink() {
        return Err(err(|what, path| SecretFileError::Symlink { what, path }));
    }
    if !before.is_file() {
        return Err(err(|what, path| SecretFileError::NotAFile { what, path }));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
        return Err(io(std::io::Error::other(
            "it was replaced while being read; try again",
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Permissions {
            what,
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_LEN + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_LEN {
        return Err(io(std::io::Error::other(
            "it is larger than 1 MiB; point the setting at the secret itself",
        )));
    }
    Ok(bytes)
}

/// [`read`] for a secret kept as text on its first line (a password, a
/// shared secret): UTF-8, the line ending dropped. Empty is an error.
pub fn read_line(path: &Path, what: &'static str) -> Result<String, SecretFileError> {
    let bytes = read(path, what)?;
    let invalid = |message: &str| SecretFileError::Io {
        what,
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned()),
    };
    let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text"))?;
    let line = text.trim_end_matches(['\n', '\r']);
    if line.is_empty() {
        return Err(invalid("it is empty; put the secret on its first line"));
    }
    if line.contains(['\n', '\r']) {
        return Err(invalid(
            "it holds more than one line; put only the secret in it",
        ));
    }
    Ok(line.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn reads_only_private_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let ok = file(dir.path(), "ok", "s3cret\n", 0o600);
        assert_eq!(read_line(&ok, "x").unwrap(), "s3cret");
        assert_eq!(read(&ok, "x").unwrap(), b"s3cret\n");
        assert_eq!(
            read_line(&file(dir.path(), "ro", "s", 0o400), "x").unwrap(),
            "s"
        );
        for mode in [0o640, 0o604, 0o644, 0o620, 0o660] {
            let p = file(dir.path(), &format!("m{mode:o}"), "s", mode);
            let e = read(&p, "server.tls_key").unwrap_err();
            assert!(
                matches!(e, SecretFileError::Permissions { .. }),
                "{mode:o}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.starts_with("server.tls_key "), "{msg}");
            assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert!(matches!(
            read(&link, "x"),
            Err(SecretFileError::Symlink { .. })
        ));
        assert!(matches!(
            read(dir.path(), "x"),
            Err(SecretFileError::NotAFile { .. })
        ));
        assert!(matches!(
            read(&dir.path().join("none"), "x"),
            Err(SecretFileError::Missing { .. })
        ));
        let big = file(dir.path(), "big", &"x".repeat(1 << 20 | 1), 0o600);
        assert!(matches!(read(&big, "x"), Err(SecretFileError::Io { .. })));
        for (name, text) in [("empty", "\n"), ("two", "a\nb\n")] {
            let p = file(dir.path(), name, text, 0o600);
            assert!(read_line(&p, "x").is_err(), "{name}");
        }
    }
}
