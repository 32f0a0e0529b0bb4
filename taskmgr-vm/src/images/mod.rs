//! Root file system images: the read-only `/` a Linux domain may start from, with the
//! session's scratch directory layered over it (see `kernel/overlay.rs`). The paper's
//! "no brave new world": a session asks for `debian-12-python` and runs Debian's own
//! `/usr/bin/python3`, which loads its libraries from the image through its own dynamic
//! loader.
//!
//! The server operator builds images from Debian's packages with `xenoserver image build`
//! ([`build()`]), through the machine's own apt configuration. An image is content-addressed:
//! its [`manifest`] lists every entry (type, mode, size, the SHA-256 of a file's bytes
//! or a link's target, path) and the image's digest is the SHA-256 of the manifest. It lives in
//! `<images_dir>/<digest>/` (`root/` and `manifest`), and is offered under a name listed in
//! the task manager's configuration beside its digest:
//!
//! ```toml
//! [[linux.images]]
//! name = "debian-12-python"
//! digest = "sha256-4f1c…"
//! ```
//!
//! At start the task manager [opens](open) each: the manifest must hash to the digest the
//! configuration names, so a configuration always means the same bytes; `xenoserver image
//! verify` rehashes every file as well.

pub mod build;
pub mod manifest;

use std::path::{Path, PathBuf};

pub use build::{BuildOptions, Built, build};

/// The prefix of every image digest.
pub const DIGEST_PREFIX: &str = "sha256-";
/// Most images one task manager offers (each is advertised in the XIS, whose environments
/// hold at most 16 each).
pub const IMAGES_MAX: usize = 16;

/// What can go wrong with an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A name that is not an identifier.
    #[error(
        "image name {0:?} is not an identifier (a letter, then letters, digits, '_', '.' or '-'; at most 64)"
    )]
    BadName(String),
    /// A digest that is not `sha256-` and 64 hex digits.
    #[error("image digest {0:?} is not {DIGEST_PREFIX} and 64 hexadecimal digits")]
    BadDigest(String),
    /// The image's files are missing or unreadable.
    #[error("image {name}: {path}: {error}")]
    Io {
        /// The image.
        name: String,
        /// What could not be read.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The manifest does not hash to the configured digest.
    #[error("image {name}: its manifest hashes to {actual}, not the configured {expected}")]
    DigestMismatch {
        /// The image.
        name: String,
        /// The digest the configuration names.
        expected: String,
        /// The manifest's.
        actual: String,
    },
    /// A file differs from the manifest.
    #[error("image {name}: {path} differs from its manifest: {problem}")]
    Tampered {
        /// The image.
        name: String,
        /// The entry that differs.
        path: String,
        /// How.
        problem: String,
    },
    /// Building failed.
    #[error("image build: {0}")]
    Build(String),
}

/// An image as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// What sessions ask for (`EnvImage`) and the XIS advertises (`Image`).
    pub name: String,
    /// `sha256-` and the manifest's SHA-256.
    pub digest: String,
}

impl ImageEntry {
    /// The `[[linux.images]]` entry offering it, as `xenoserver image build` prints it.
    pub fn to_toml(&self) -> String {
        format!(
            "[[linux.images]]\nname = \"{}\"\ndigest = \"{}\"\n",
            self.name, self.digest
        )
    }

    /// The image named `name` in such an entry, if `text` gives its digest.
    pub fn from_toml(name: &str, text: &str) -> Option<ImageEntry> {
        let digest = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("digest = \""))?
            .trim_end_matches('"');
        Some(ImageEntry {
            name: name.to_owned(),
            digest: digest.to_owned(),
        })
    }
}

/// The image `options` describe as `record` (its `[[linux.images]]` entry) names it, if that
/// image is there and opens; otherwise built now, and `record` rewritten.
pub fn reuse_or_build(
    options: &BuildOptions,
    record: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageEntry, ImageError> {
    if let Some(entry) = std::fs::read_to_string(record)
        .ok()
        .and_then(|text| ImageEntry::from_toml(&options.name, &text))
        && open(&options.images_dir, &entry).is_ok()
    {
        return Ok(entry);
    }
    let built = build(options, progress)?;
    let entry = ImageEntry {
        name: built.name,
        digest: built.digest,
    };
    std::fs::write(record, entry.to_toml()).map_err(|error| ImageError::Io {
        name: entry.name.clone(),
        path: record.to_owned(),
        error,
    })?;
    Ok(entry)
}

/// An opened image, ready to be the lower layer of domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Its name.
    pub name: String,
    /// Its digest.
    pub digest: String,
    /// The directory holding its tree.
    pub root: PathBuf,
    /// Entries in its manifest.
    pub entries: u64,
    /// Bytes of its regular files.
    pub bytes: u64,
}

/// Whether `name` is an identifier as the requirements' `EnvImage` takes one.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_digest(digest: &str) -> Result<(), ImageError> {
    let hex = digest
        .strip_prefix(DIGEST_PREFIX)
        .ok_or_else(|| ImageError::BadDigest(digest.to_owned()))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ImageError::BadDigest(digest.to_owned()));
    }
    Ok(())
}

/// Where an image with `digest` lives under `images_dir`.
pub fn image_dir(images_dir: &Path, digest: &str) -> PathBuf {
    images_dir.join(digest)
}

/// Opens the image `entry` names: its manifest must hash to its digest.
pub fn open(images_dir: &Path, entry: &ImageEntry) -> Result<Image, ImageError> {
    if !valid_name(&entry.name) {
        return Err(ImageError::BadName(entry.name.clone()));
    }
    check_digest(&entry.digest)?;
    let dir = image_dir(images_dir, &entry.digest);
    let io = |path: PathBuf| {
        let name = entry.name.clone();
        move |error| ImageError::Io { name, path, error }
    };
    let manifest_path = dir.join(manifest::MANIFEST_FILE);
    let text = std::fs::read(&manifest_path).map_err(io(manifest_path.clone()))?;
    let actual = manifest::digest_of(&text);
    if actual != entry.digest {
        return Err(ImageError::DigestMismatch {
            name: entry.name.clone(),
            expected: entry.digest.clone(),
            actual,
        });
    }
    let parsed = manifest::parse(&text).map_err(|problem| ImageError::Tampered {
        name: entry.name.clone(),
        path: manifest::MANIFEST_FILE.to_owned(),
        problem,
    })?;
    let root = dir.join(manifest::ROOT_DIR);
    std::fs::metadata(&root).map_err(io(root.clone()))?;
    Ok(Image {
        name: entry.name.clone(),
        digest: entry.digest.clone(),
        root,
        entries: parsed.len() as u64,
        bytes: parsed.iter().map(|line| line.size).sum(),
    })
}

/// Rehashes every entry of an opened image against its manifest.
pub fn verify(image: &Image) -> Result<(), ImageError> {
    let manifest_path = image
        .root
        .parent()
        .map(|dir| dir.join(manifest::MANIFEST_FILE))
        .unwrap_or_default();
    let text = std::fs::read(&manifest_path).map_err(|error| ImageError::Io {
        name: image.name.clone(),
        path: manifest_path.clone(),
        error,
    })?;
    let actual = manifest::scan(&image.root).map_err(|error| ImageError::Io {
        name: image.name.clone(),
        path: image.root.clone(),
        error,
    })?;
    let recorded = manifest::parse(&text).map_err(|problem| ImageError::Tampered {
        name: image.name.clone(),
        path: manifest::MANIFEST_FILE.to_owned(),
        problem,
    })?;
    if let Some(problem) = manifest::difference(&recorded, &actual) {
        return Err(ImageError::Tampered {
            name: image.name.clone(),
            path: problem.0,
            problem: problem.1,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_from_what_the_build_prints() {
        let entry = ImageEntry {
            name: "debian-12-python".to_owned(),
            digest: format!("{DIGEST_PREFIX}{}", "ab".repeat(32)),
        };
        assert_eq!(
            ImageEntry::from_toml("debian-12-python", &entry.to_toml()),
            Some(entry)
        );
        assert_eq!(ImageEntry::from_toml("x", "name = \"x\"\n"), None);
    }

    #[test]
    fn names_and_digests_are_checked() {
        assert!(valid_name("debian-12-python"));
        assert!(!valid_name("12-python"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(check_digest(&format!("{DIGEST_PREFIX}{}", "a".repeat(64))).is_ok());
        assert!(check_digest("sha256-XYZ").is_err());
        assert!(check_digest(&"a".repeat(64)).is_err());
    }

    #[test]
    fn an_image_opens_only_under_its_own_digest_and_verify_finds_changes() {
        let images = tempfile::tempdir().expect("dir");
        let staging = images.path().join("staging");
        std::fs::create_dir_all(staging.join("root/usr/bin")).expect("tree");
        std::fs::write(staging.join("root/usr/bin/hello"), b"#!/bin/sh\necho hi\n").expect("file");
        std::os::unix::fs::symlink("usr/bin", staging.join("root/bin")).expect("link");
        let lines = manifest::scan(&staging.join("root")).expect("scan");
        let text = manifest::render(&lines, &[]);
        let digest = manifest::digest_of(&text);
        std::fs::write(staging.join(manifest::MANIFEST_FILE), &text).expect("manifest");
        std::fs::rename(&staging, image_dir(images.path(), &digest)).expect("place");
        let entry = ImageEntry {
            name: "tiny".to_owned(),
            digest: digest.clone(),
        };
        let image = open(images.path(), &entry).expect("opens");
        assert_eq!(image.entries, 4);
        verify(&image).expect("verifies");
        let wrong = ImageEntry {
            name: "tiny".to_owned(),
            digest: format!("{DIGEST_PREFIX}{}", "0".repeat(64)),
        };
        assert!(matches!(
            open(images.path(), &wrong),
            Err(ImageError::Io { .. })
        ));
        std::fs::write(image.root.join("usr/bin/hello"), b"changed").expect("tamper");
        let error = verify(&image).expect_err("tampered");
        assert!(error.to_string().contains("usr/bin/hello"), "{error}");
    }
}
