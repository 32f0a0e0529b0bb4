//! `xenoserver image build NAME --packages python3,gcc,make`: an image from Debian's
//! packages, fetched through this machine's own apt configuration (no mirror is named here),
//! unpacked without a chroot and without root.
//!
//! 1. The packages' closure under `Depends` and `Pre-Depends` (and `Recommends` when asked),
//!    as `apt-cache depends --recurse` resolves it against the apt lists.
//! 2. `apt-get download` of every package into a build directory beside the images.
//! 3. `dpkg-deb -x` of each into the new tree. Maintainer scripts are not run, so what
//!    they make (alternatives such as `cc` and `awk`, users in `/etc/passwd`) is not there.
//! 4. The merged `/usr` of Debian 12: `/bin`, `/sbin`, `/lib*` move under `/usr` and become
//!    links to it; `/proc`, `/dev`, `/dev/shm` (where `sem_open` and `shm_open` make their
//!    files) and `/tmp` are made for the domain's own.
//! 5. The [`manifest`], whose SHA-256 is the image's digest; the tree moves to
//!    `<images_dir>/<digest>/`. An image already there with that digest is kept as it is.

use super::manifest::{self, MANIFEST_FILE, ROOT_DIR};
use super::{ImageError, image_dir, valid_name};
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Most packages one build may name, and most in its resolved closure: a bound on the
/// command lines and on what one image holds (Debian's whole `standard` task is about 400).
pub const PACKAGES_MAX: usize = 2048;
/// The directories Debian 12 keeps under `/usr` (merged `/usr`).
const MERGED_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The image's name (an identifier).
    pub name: String,
    /// Debian package names; their dependencies are added.
    pub packages: Vec<String>,
    /// Where images live (`<images_dir>/<digest>/`).
    pub images_dir: PathBuf,
    /// Whether `Recommends` are followed too, as `apt-get install` does by default.
    pub recommends: bool,
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image's name.
    pub name: String,
    /// Its digest.
    pub digest: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Every package in it, with its version.
    pub packages: Vec<(String, String)>,
    /// Entries in its manifest.
    pub entries: usize,
    /// Bytes of its files.
    pub bytes: u64,
    /// Whether an identical image was already there (and was kept).
    pub reused: bool,
}

fn failed(what: impl std::fmt::Display) -> ImageError {
    ImageError::Build(what.to_string())
}

/// Whether `name` is a Debian package name (Policy 5.6.7).
fn package_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Runs a command; its standard output, or an error with its standard error.
fn run(command: &mut Command) -> Result<Vec<u8>, ImageError> {
    let shown = format!("{command:?}");
    let output = command
        .env("LC_ALL", "C")
        .output()
        .map_err(|error| failed(format!("cannot run {shown}: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!(
            "{shown} failed ({}): {}",
            output.status,
            stderr.trim()
        )));
    }
    Ok(output.stdout)
}

/// The closure of `packages` as apt resolves it.
fn resolve(packages: &[String], recommends: bool) -> Result<BTreeSet<String>, ImageError> {
    let mut command = Command::new("apt-cache");
    command.args([
        "depends",
        "--recurse",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
    ]);
    if !recommends {
        command.arg("--no-recommends");
    }
    command.arg("--").args(packages);
    let output = run(&mut command)?;
    let mut closure = BTreeSet::new();
    for line in String::from_utf8_lossy(&output).lines() {
        // Package names start a line; their relations are indented; `<name>` is a virtual
        // package, whose providers are listed on lines of their own.
        if line.starts_with(' ') || line.starts_with('<') || line.is_empty() {
            continue;
        }
        let name = line.split(':').next().unwrap_or(line).trim();
        if package_name(name) {
            closure.insert(name.to_owned());
        }
        if closure.len() > PACKAGES_MAX {
            return Err(failed(format!(
                "the packages need more than {PACKAGES_MAX} packages"
            )));
        }
    }
    for package in packages {
        if !closure.contains(package) {
            return Err(failed(format!("apt does not know the package {package:?}")));
        }
    }
    Ok(closure)
}

/// Moves everything under `from` into `to`, merging directories, and leaves `from` empty.
/// Relative links that climb out of their directory are made absolute first, so that they
/// mean the same from their new place.
fn merge_into(root: &Path, from: &Path, to: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(root.join(to)).map_err(failed)?;
    for entry in std::fs::read_dir(root.join(from)).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let source = from.join(entry.file_name());
        let target = to.join(entry.file_name());
        let metadata = std::fs::symlink_metadata(root.join(&source)).map_err(failed)?;
        if metadata.is_dir() && root.join(&target).is_dir() {
            merge_into(root, &source, &target)?;
            std::fs::remove_dir(root.join(&source)).map_err(failed)?;
            continue;
        }
        if std::fs::symlink_metadata(root.join(&target)).is_ok() {
            return Err(failed(format!(
                "/{} and /{} are both in the packages (merging /usr)",
                source.display(),
                target.display()
            )));
        }
        if metadata.is_symlink() {
            let link = std::fs::read_link(root.join(&source)).map_err(failed)?;
            if link.is_relative() && link.as_os_str().as_bytes().starts_with(b"..") {
                let mut absolute = PathBuf::from("/");
                absolute.push(from);
                for part in link.components() {
                    match part {
                        std::path::Component::ParentDir => {
                            absolute.pop();
                        }
                        std::path::Component::Normal(name) => absolute.push(name),
                        _ => {}
                    }
                }
                std::fs::remove_file(root.join(&source)).map_err(failed)?;
                std::os::unix::fs::symlink(&absolute, root.join(&target)).map_err(failed)?;
                continue;
            }
        }
        std::fs::rename(root.join(&source), root.join(&target)).map_err(failed)?;
    }
    Ok(())
}

/// Debian 12's layout on an unpacked tree: merged `/usr`, and the mount points a domain
/// answers itself.
fn finish_tree(root: &Path) -> Result<(), ImageError> {
    for dir in MERGED_DIRS {
        let path = root.join(dir);
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_dir() => {
                merge_into(root, Path::new(dir), &Path::new("usr").join(dir))?;
                std::fs::remove_dir(&path).map_err(failed)?;
            }
            Ok(_) => continue,
            Err(_) if !root.join("usr").join(dir).exists() => continue,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(Path::new("usr").join(dir), &path).map_err(failed)?;
    }
    for (dir, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("dev/shm", 0o1777),
        ("tmp", 0o1777),
    ] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(failed)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    }
    Ok(())
}

/// Builds the image `options` describe, telling `progress` what it does.
pub fn build(options: &BuildOptions, progress: &mut dyn FnMut(&str)) -> Result<Built, ImageError> {
    if !valid_name(&options.name) {
        return Err(ImageError::BadName(options.name.clone()));
    }
    if options.packages.is_empty() {
        return Err(failed("name at least one package"));
    }
    if options.packages.len() > PACKAGES_MAX {
        return Err(failed(format!("at most {PACKAGES_MAX} packages")));
    }
    if let Some(bad) = options.packages.iter().find(|name| !package_name(name)) {
        return Err(failed(format!("{bad:?} is not a Debian package name")));
    }
    std::fs::create_dir_all(&options.images_dir).map_err(|error| {
        failed(format!(
            "cannot make {}: {error}",
            options.images_dir.display()
        ))
    })?;
    progress(&format!(
        "resolving {} against the apt lists",
        options.packages.join(", ")
    ));
    let closure = resolve(&options.packages, options.recommends)?;
    let work = options
        .images_dir
        .join(format!(".build-{}-{}", options.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = build_in(options, &closure, &work, progress);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn build_in(
    options: &BuildOptions,
    closure: &BTreeSet<String>,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, ImageError> {
    let debs = work.join("debs");
    let staging = work.join("image");
    let tree = staging.join(ROOT_DIR);
    std::fs::create_dir_all(&debs).map_err(failed)?;
    std::fs::create_dir_all(&tree).map_err(failed)?;
    progress(&format!("downloading {} packages", closure.len()));
    run(Command::new("apt-get")
        .arg("download")
        .arg("--")
        .args(closure)
        .current_dir(&debs))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&debs)
        .map_err(failed)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    files.sort();
    if files.len() != closure.len() {
        return Err(failed(format!(
            "apt-get download gave {} files for {} packages",
            files.len(),
            closure.len()
        )));
    }
    let mut packages = Vec::new();
    for (index, deb) in files.iter().enumerate() {
        let fields = run(Command::new("dpkg-deb")
            .args(["--showformat=${Package} ${Version}", "--show"])
            .arg(deb))?;
        let fields = String::from_utf8_lossy(&fields);
        let (name, version) = fields
            .trim()
            .split_once(' ')
            .ok_or_else(|| failed(format!("{}: no package name and version", deb.display())))?;
        packages.push((name.to_owned(), version.to_owned()));
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
        if (index + 1) % 10 == 0 || index + 1 == files.len() {
            progress(&format!(
                "unpacked {} of {} packages",
                index + 1,
                files.len()
            ));
        }
    }
    packages.sort();
    finish_tree(&tree)?;
    progress("hashing the tree");
    let lines = manifest::scan(&tree).map_err(failed)?;
    let text = manifest::render(&lines, &packages);
    let digest = manifest::digest_of(&text);
    std::fs::write(staging.join(MANIFEST_FILE), &text).map_err(failed)?;
    let dir = image_dir(&options.images_dir, &digest);
    let reused = dir.join(MANIFEST_FILE).exists();
    if !reused {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir).map_err(failed)?;
    }
    Ok(Built {
        name: options.name.clone(),
        digest,
        dir,
        packages,
        entries: lines.len(),
        bytes: lines.iter().map(|line| line.size).sum(),
        reused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_follow_debian_policy() {
        assert!(package_name("python3"));
        assert!(package_name("libstdc++6"));
        assert!(package_name("perl-modules-5.36"));
        assert!(!package_name("Python3"));
        assert!(!package_name("a"));
        assert!(!package_name("x;rm"));
        assert!(!package_name("-o"));
    }

    #[test]
    fn the_tree_gets_debians_merged_usr() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).expect("bin");
        std::fs::create_dir_all(root.join("usr/bin")).expect("usr/bin");
        std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).expect("lib");
        std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).expect("usr/lib");
        std::fs::write(root.join("bin/dash"), b"dash").expect("dash");
        std::fs::write(root.join("usr/bin/env"), b"env").expect("env");
        std::fs::write(root.join("lib/x86_64-linux-gnu/libc.so.6"), b"c").expect("libc");
        std::os::unix::fs::symlink("dash", root.join("bin/sh")).expect("sh");
        std::os::unix::fs::symlink("../share/x", root.join("lib/up")).expect("up");
        finish_tree(root).expect("finish");
        assert_eq!(
            std::fs::read_link(root.join("bin")).expect("link"),
            Path::new("usr/bin")
        );
        assert_eq!(std::fs::read(root.join("bin/sh")).expect("sh"), b"dash");
        assert_eq!(
            std::fs::read(root.join("usr/bin/env")).expect("env"),
            b"env"
        );
        assert!(root.join("usr/lib/x86_64-linux-gnu/libc.so.6").exists());
        assert_eq!(
            std::fs::read_link(root.join("usr/lib/up")).expect("up"),
            Path::new("/share/x")
        );
        assert!(root.join("tmp").is_dir() && root.join("proc").is_dir());
    }

    #[test]
    fn bad_requests_fail_before_anything_is_made() {
        let dir = tempfile::tempdir().expect("dir");
        let images_dir = dir.path().join("images");
        let mut options = BuildOptions {
            name: "9lives".to_owned(),
            packages: vec!["dash".to_owned()],
            images_dir: images_dir.clone(),
            recommends: false,
        };
        assert!(matches!(
            build(&options, &mut |_| {}),
            Err(ImageError::BadName(_))
        ));
        options.name = "ok".to_owned();
        options.packages = vec!["dash;true".to_owned()];
        let error = build(&options, &mut |_| {}).expect_err("bad package");
        assert!(error.to_string().contains("dash;true"), "{error}");
        assert!(!images_dir.exists());
    }
}
