//! An image's manifest: one line per entry of its tree, in byte order of path, and the
//! packages it was built from. The image's digest is the SHA-256 of these bytes, so two
//! builds of the same packages at the same versions have the same digest, and any change to a
//! file, a mode or a link is a different image.
//!
//! ```text
//! # package python3 3.11.2-1+b1
//! d 0755 0 - usr
//! f 0755 6831736 0c7a…e1 usr/bin/python3.11
//! l 0777 10 707974686f6e332e3131 usr/bin/python3
//! ```
//!
//! A line is the kind (`d`irectory, `f`ile, `l`ink), the permission bits in octal, the size
//! (a file's bytes, a link target's length), the SHA-256 of a file's bytes or a link's target
//! in hexadecimal (`-` for a directory), and the path relative to the image's root. Owners and
//! times are not recorded: a domain's files all belong to its one user.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The manifest's file name beside the tree.
pub const MANIFEST_FILE: &str = "manifest";
/// The tree's directory name.
pub const ROOT_DIR: &str = "root";
/// Most entries one image may have: a bound on what building, opening and verifying hold in
/// memory (a Debian image with python3, gcc and perl has about 7,500).
pub const ENTRIES_MAX: usize = 1_000_000;

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `d`, `f` or `l`.
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    /// A file's bytes or a link target's length; 0 for a directory.
    pub size: u64,
    /// Hexadecimal SHA-256 of a file's bytes or a link's target; `-` for a directory.
    pub hash: String,
    /// Relative to the image's root, `/`-separated.
    pub path: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The digest of manifest bytes: `sha256-` and their SHA-256.
pub fn digest_of(text: &[u8]) -> String {
    format!("{}{}", super::DIGEST_PREFIX, sha256_hex(text))
}

/// Every entry under `root`, sorted by path. Devices, sockets and pipes are refused (Debian
/// packages ship none), as are paths that are not UTF-8 or hold a newline.
pub fn scan(root: &Path) -> std::io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    let mut pending = vec![std::path::PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let text = std::str::from_utf8(path.as_os_str().as_bytes())
                .ok()
                .filter(|text| !text.contains('\n'))
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: a path an image cannot record", path.display()),
                    )
                })?
                .to_owned();
            let metadata = std::fs::symlink_metadata(root.join(&path))?;
            let mode = metadata.permissions().mode() & 0o7777;
            let line = if metadata.is_dir() {
                pending.push(path);
                Line {
                    kind: 'd',
                    mode,
                    size: 0,
                    hash: "-".to_owned(),
                    path: text,
                }
            } else if metadata.is_symlink() {
                let target = std::fs::read_link(root.join(&path))?;
                let bytes = target.as_os_str().as_bytes();
                Line {
                    kind: 'l',
                    mode: 0o777,
                    size: bytes.len() as u64,
                    hash: sha256_hex(bytes),
                    path: text,
                }
            } else if metadata.is_file() {
                let mut file = std::fs::File::open(root.join(&path))?;
                let mut hasher = Sha256::new();
                let mut buffer = vec![0u8; 1 << 16];
                loop {
                    let read = file.read(&mut buffer)?;
                    if read == 0 {
                        break;
                    }
                    hasher.update(&buffer[..read]);
                }
                Line {
                    kind: 'f',
                    mode,
                    size: metadata.size(),
                    hash: hex::encode(hasher.finalize()),
                    path: text,
                }
            } else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a file, directory or link", path.display()),
                ));
            };
            lines.push(line);
            if lines.len() > ENTRIES_MAX {
                return Err(std::io::Error::other(format!(
                    "more than {ENTRIES_MAX} entries"
                )));
            }
        }
    }
    lines.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(lines)
}

/// The manifest's bytes: `# package NAME VERSION` lines, then the entries.
pub fn render(lines: &[Line], packages: &[(String, String)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, version) in packages {
        out.push_str(&format!("# package {name} {version}\n"));
    }
    for line in lines {
        out.push_str(&format!(
            "{} {:04o} {} {} {}\n",
            line.kind, line.mode, line.size, line.hash, line.path
        ));
    }
    out.into_bytes()
}

/// The entries of manifest bytes (comment lines skipped).
pub fn parse(text: &[u8]) -> Result<Vec<Line>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the manifest is not UTF-8".to_owned())?;
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let bad = || format!("manifest line {}: {line:?} is not an entry", number + 1);
        let mut fields = line.splitn(5, ' ');
        let mut next = || fields.next().ok_or_else(bad);
        let kind = next()?;
        let mode = u32::from_str_radix(next()?, 8).map_err(|_| bad())?;
        let size = next()?.parse::<u64>().map_err(|_| bad())?;
        let hash = next()?.to_owned();
        let path = next()?.to_owned();
        let kind = match kind {
            "d" => 'd',
            "f" => 'f',
            "l" => 'l',
            _ => return Err(bad()),
        };
        lines.push(Line {
            kind,
            mode,
            size,
            hash,
            path,
        });
        if lines.len() > ENTRIES_MAX {
            return Err(format!("the manifest has more than {ENTRIES_MAX} entries"));
        }
    }
    Ok(lines)
}

/// The first path where two manifests' entries differ, and how.
pub fn difference(recorded: &[Line], actual: &[Line]) -> Option<(String, String)> {
    let mut recorded_iter = recorded.iter();
    let mut actual_iter = actual.iter();
    loop {
        match (recorded_iter.next(), actual_iter.next()) {
            (None, None) => return None,
            (Some(line), None) => return Some((line.path.clone(), "missing".to_owned())),
            (None, Some(line)) => {
                return Some((line.path.clone(), "not in the manifest".to_owned()));
            }
            (Some(a), Some(b)) if a.path != b.path => {
                let first = if a.path.as_bytes() < b.path.as_bytes() {
                    a
                } else {
                    b
                };
                return Some((first.path.clone(), "added or missing".to_owned()));
            }
            (Some(a), Some(b)) if a != b => {
                return Some((
                    a.path.clone(),
                    format!(
                        "recorded {} {:04o} {} bytes, found {} {:04o} {} bytes",
                        a.kind, a.mode, a.size, b.kind, b.mode, b.size
                    ),
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_and_its_digest_follows_its_contents() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("usr")).expect("usr");
        std::fs::write(dir.path().join("usr/a b"), b"x").expect("file");
        std::os::unix::fs::symlink("/usr/a b", dir.path().join("link")).expect("link");
        let lines = scan(dir.path()).expect("scan");
        let paths: Vec<&str> = lines.iter().map(|line| line.path.as_str()).collect();
        assert_eq!(paths, ["link", "usr", "usr/a b"]);
        let text = render(&lines, &[("dash".to_owned(), "0.5.12-2".to_owned())]);
        assert_eq!(parse(&text).expect("parses"), lines);
        let digest = digest_of(&text);
        std::fs::write(dir.path().join("usr/a b"), b"y").expect("change");
        let changed = scan(dir.path()).expect("scan again");
        assert_ne!(digest_of(&render(&changed, &[])), digest);
        let (path, _) = difference(&lines, &changed).expect("differs");
        assert_eq!(path, "usr/a b");
        assert!(parse(b"q 0755 0 - x\n").is_err());
    }
}
