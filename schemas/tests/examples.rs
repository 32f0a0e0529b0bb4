//! The example corpus in `schemas/examples/` against the Rust validator and, independently,
//! against `xmllint --schema` with the committed XSD files.
//!
//! - `valid/`: both accept; each also survives a round trip through our writer, and the
//!   writer's output is itself accepted by xmllint.
//! - `invalid/`: both refuse; our first error is exactly the message recorded in the file's
//!   trailing `<!-- expect: ... -->` comment.
//! - `semantic/`: the XSD accepts (the rule is beyond what XSD 1.0 can state); we refuse with
//!   the recorded message.
//! - `hostile/`: refused by us before any entity is looked at, with the recorded message.

use std::path::{Path, PathBuf};
use std::process::Command;
use xeno_schemas::Document;
use xeno_schemas::documents::{
    ALL_SCHEMAS, AnyDocument, EnvironmentalRequirements, PurchaseOrder, ServerAdvertisement,
    TaskDescription, UsageRecord, parse_any, schema_for_root,
};
use xeno_schemas::schema::xsd;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples(kind: &str) -> Vec<PathBuf> {
    let dir = crate_dir().join("examples").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

fn expected_message(path: &Path) -> String {
    let text = String::from_utf8(read(path)).expect("examples are UTF-8");
    let start = text
        .rfind("<!-- expect: ")
        .unwrap_or_else(|| panic!("{} has no expect comment", path.display()));
    let rest = &text[start + "<!-- expect: ".len()..];
    rest[..rest.find(" -->").expect("closed comment")].to_owned()
}

/// The XSD for a file, chosen by its root element (files with a foreign root are checked
/// against the requirements schema, as `xeno schema validate` does).
fn xsd_for(bytes: &[u8]) -> PathBuf {
    let text = String::from_utf8_lossy(bytes);
    let file = ALL_SCHEMAS
        .iter()
        .find(|schema| text.contains(&format!("<{}", schema.root.name)))
        .map_or("EnvironmentalRequirements.xsd", |schema| schema.xsd_file);
    crate_dir().join("xsd").join(file)
}

/// Whether `xmllint --schema` accepts the bytes.
fn xmllint_accepts(xsd: &Path, bytes: &[u8], label: &str) -> bool {
    let dir = tempdir();
    let file = dir.join("document.xml");
    std::fs::write(&file, bytes).expect("writing temp file");
    let output = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(xsd)
        .arg(&file)
        .output()
        .expect("xmllint must be installed (Debian package libxml2-utils; .ci/run installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    if !output.status.success() {
        eprintln!(
            "xmllint on {label}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.status.success()
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "xeno-schemas-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Serializes whatever was parsed, parses that again, and checks nothing changed.
fn round_trip(document: &AnyDocument) -> String {
    fn again<T: Document + PartialEq + std::fmt::Debug>(value: &T) -> String {
        let xml = value.to_xml();
        let back = T::parse(xml.as_bytes())
            .unwrap_or_else(|error| panic!("re-parsing our own output: {error}\n{xml}"));
        assert_eq!(&back, value, "round trip changed the document:\n{xml}");
        xml
    }
    match document {
        AnyDocument::EnvironmentalRequirements(d) => again::<EnvironmentalRequirements>(d),
        AnyDocument::TaskDescription(d) => again::<TaskDescription>(d),
        AnyDocument::ServerAdvertisement(d) => again::<ServerAdvertisement>(d),
        AnyDocument::PurchaseOrder(d) => again::<PurchaseOrder>(d),
        AnyDocument::UsageRecord(d) => again::<UsageRecord>(d),
    }
}

#[test]
fn the_papers_example_validates_exactly_as_printed() {
    let path = crate_dir().join("examples/valid/paper-requirements.xml");
    let requirements =
        EnvironmentalRequirements::parse(&read(&path)).expect("the paper's example is valid");
    assert_eq!(requirements.name, "MyEnvironment");
    assert_eq!(requirements.env_type, "Linux");
    assert_eq!(
        requirements.version,
        Some(xeno_schemas::documents::EnvVersion::Kernel("2.4.18".into()))
    );
    assert_eq!(requirements.ip_addresses, Some(1));
    assert_eq!(requirements.qos.cpu_msps, Some(150));
    assert_eq!(requirements.net_kbps, Some(5_000));
}

#[test]
fn valid_examples_parse_and_round_trip() {
    for path in examples("valid") {
        let document =
            parse_any(&read(&path)).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        round_trip(&document);
    }
}

#[test]
fn invalid_examples_fail_with_the_recorded_message() {
    for path in examples("invalid")
        .into_iter()
        .chain(examples("semantic"))
        .chain(examples("hostile"))
    {
        let errors =
            parse_any(&read(&path)).expect_err(&format!("{} must be refused", path.display()));
        let first = errors.first().expect("at least one error").to_string();
        assert_eq!(first, expected_message(&path), "{}", path.display());
    }
}

#[test]
fn xmllint_and_our_validator_agree_on_every_example() {
    for path in examples("valid") {
        let bytes = read(&path);
        assert!(
            xmllint_accepts(&xsd_for(&bytes), &bytes, &path.display().to_string()),
            "{}",
            path.display()
        );
        // Our writer's output must satisfy the XSD too.
        let ours = round_trip(&parse_any(&bytes).expect("valid"));
        let label = format!("{} as rewritten by us", path.display());
        assert!(
            xmllint_accepts(&xsd_for(ours.as_bytes()), ours.as_bytes(), &label),
            "{label}"
        );
    }
    for path in examples("invalid") {
        let bytes = read(&path);
        assert!(
            !xmllint_accepts(&xsd_for(&bytes), &bytes, "invalid"),
            "xmllint accepted {}",
            path.display()
        );
        assert!(parse_any(&bytes).is_err(), "we accepted {}", path.display());
    }
    // Rules an XSD cannot state: xmllint accepts, we refuse (checked above).
    for path in examples("semantic") {
        let bytes = read(&path);
        assert!(
            xmllint_accepts(&xsd_for(&bytes), &bytes, "semantic"),
            "xmllint refused {}",
            path.display()
        );
    }
}

#[test]
fn committed_xsd_files_are_generated_from_the_model() {
    for schema in ALL_SCHEMAS {
        let path = crate_dir().join("xsd").join(schema.xsd_file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == xsd::generate(schema),
            "{} is stale: run `cargo run -p xeno-cli -- schema xsd`",
            path.display()
        );
        assert_eq!(
            schema_for_root(schema.root.name).map(|s| s.xsd_file),
            Some(schema.xsd_file)
        );
    }
}
