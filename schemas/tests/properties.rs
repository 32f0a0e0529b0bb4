//! Property tests on the parsers, run in the ordinary test suite on stable Rust (the `cargo
//! fuzz` targets in `schemas/fuzz/` explore the same properties for longer).
//!
//! - Any bytes: every parser returns, without panicking, in bounded time.
//! - Mutated examples: same; and whatever is accepted survives a round trip through our writer.
//! - Generated documents: survive a round trip.
//! - Every XSD pattern and its Rust twin accept exactly the same strings.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::time::{Duration, Instant};
use xeno_schemas::Document;
use xeno_schemas::documents::{
    ALL_SCHEMAS, EnvVersion, EnvironmentalRequirements, Program, PurchaseOrder, QoS,
    ServerAdvertisement, TaskDescription, TaskFile, UsageRecord, parse_any,
};
use xeno_schemas::schema::model::{Content, ElementDecl, Pattern, SimpleKind, Term};

/// A generous bound for one parse of a few KiB in an unoptimized build: what a quadratic or
/// exponential path would blow through, never what a linear one approaches.
const PARSE_TIME_MAX: Duration = Duration::from_secs(2);

fn check_all_parsers(bytes: &[u8]) {
    fn one<T: Document + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
        let started = Instant::now();
        let result = T::parse(bytes);
        assert!(
            started.elapsed() < PARSE_TIME_MAX,
            "parse took {:?}",
            started.elapsed()
        );
        if let Ok(document) = result {
            let xml = document.to_xml();
            let back = T::parse(xml.as_bytes())
                .unwrap_or_else(|error| panic!("our own output refused: {error}\n{xml}"));
            assert_eq!(back, document);
            assert_eq!(back.to_canonical(), document.to_canonical());
        }
    }
    one::<EnvironmentalRequirements>(bytes);
    one::<TaskDescription>(bytes);
    one::<ServerAdvertisement>(bytes);
    one::<PurchaseOrder>(bytes);
    one::<UsageRecord>(bytes);
    let _ = parse_any(bytes);
}

fn valid_examples() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/valid");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| std::fs::read(path).expect("example"))
        .collect()
}

/// Fragments that make mutations likely to reach deep into the validator, not just the lexer.
const SNIPPETS: &[&str] = &[
    "<",
    ">",
    "</",
    "/>",
    "&amp;",
    "&#0;",
    "&#x10FFFF;",
    "&bogus;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<!DOCTYPE x>",
    "<?xml version=\"1.0\"?>",
    " a=\"1\"",
    "xmlns:p=\"u\"",
    "<p:x/>",
    "<Extensions>",
    "</Extensions>",
    "<Arg>",
    "</Arg>",
    "9999999999999999999999",
    "-1",
    "1.5",
    "\u{FEFF}",
    "\u{0}",
    "é",
    "<QoS>",
    "<CPUmsps>",
    "<Basic>",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, usize),
    Duplicate(usize, usize),
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Flip(at, value) => {
                if !bytes.is_empty() {
                    let at = at % len;
                    bytes[at] ^= value;
                }
            }
            Mutation::Delete(at, count) => {
                let at = at % len;
                let end = (at + count).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Insert(at, snippet) => {
                let at = (at % len).min(bytes.len());
                let snippet = SNIPPETS[snippet % SNIPPETS.len()].as_bytes();
                bytes.splice(at..at, snippet.iter().copied());
            }
            Mutation::Duplicate(at, count) => {
                let at = at % len;
                let end = (at + count).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, v)| Mutation::Flip(at, v)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(at, s)| Mutation::Insert(at, s)),
        (any::<usize>(), 1usize..256).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

/// Every pattern any schema uses.
fn all_patterns() -> Vec<&'static Pattern> {
    fn visit(
        decl: &'static ElementDecl,
        seen: &mut Vec<*const ElementDecl>,
        patterns: &mut Vec<&'static Pattern>,
    ) {
        if seen.contains(&(decl as *const _)) {
            return;
        }
        seen.push(decl);
        let mut add = |kind: &'static SimpleKind| {
            if let SimpleKind::Pattern(pattern) = kind
                && !patterns.iter().any(|p| std::ptr::eq(*p, *pattern))
            {
                patterns.push(pattern);
            }
        };
        for attribute in decl.attributes {
            add(&attribute.ty.kind);
        }
        match &decl.content {
            Content::Simple(ty) => add(&ty.kind),
            Content::Sequence(particles) => {
                for particle in *particles {
                    match particle.term {
                        Term::Element(child) => visit(child, seen, patterns),
                        Term::Choice(children) => children
                            .iter()
                            .for_each(|child| visit(child, seen, patterns)),
                    }
                }
            }
            Content::Empty | Content::AnyElements => {}
        }
    }
    let mut seen = Vec::new();
    let mut patterns = Vec::new();
    for schema in ALL_SCHEMAS {
        visit(schema.root, &mut seen, &mut patterns);
    }
    patterns
}

fn identifier() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_.-]{0,20}"
}

fn requirements() -> impl Strategy<Value = EnvironmentalRequirements> {
    let version = prop_oneof![
        Just(None),
        "[0-9][0-9.]{0,8}".prop_map(|v| Some(EnvVersion::Kernel(v))),
        "[0-9a-z][0-9a-z.+_-]{0,8}".prop_map(|v| Some(EnvVersion::Runtime(v))),
    ];
    let qos = (
        proptest::option::of(0u64..=1000),
        proptest::option::of(0u64..=1_000_000),
        proptest::option::of(0u64..=1 << 20),
    )
        .prop_map(|(cpu_msps, memory_mb, disk_mb)| QoS {
            cpu_msps,
            memory_mb,
            disk_mb,
            ..QoS::default()
        });
    (
        "[A-Za-z0-9]{1,8}( [A-Za-z0-9]{1,8}){0,2}",
        identifier(),
        version,
        proptest::option::of(0u64..=256),
        proptest::option::of(0u64..=9_999_999_999),
        qos,
        proptest::option::of(0u64..=31_622_400),
    )
        .prop_map(
            |(name, env_type, version, ip_addresses, net_kbps, qos, max_duration_seconds)| {
                let mut requirements = EnvironmentalRequirements::new(name, env_type);
                requirements.version = version;
                requirements.ip_addresses = ip_addresses;
                requirements.net_kbps = net_kbps;
                requirements.qos = qos;
                requirements.max_duration_seconds = max_duration_seconds;
                requirements
            },
        )
}

fn sha256() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

fn task() -> impl Strategy<Value = TaskDescription> {
    let program = prop_oneof![
        (sha256(), proptest::option::of("[a-z_][a-z0-9_]{0,10}"))
            .prop_map(|(sha256, entry)| Program::WasmModule { sha256, entry }),
        sha256().prop_map(|sha256| Program::WasmComponent { sha256 }),
        sha256().prop_map(|sha256| Program::Executable { sha256 }),
        "/?[a-z]{1,8}(/[a-z0-9_.-]{1,8}){0,3}"
            .prop_filter("no dot segments", |p| !p
                .split('/')
                .any(|s| s == "." || s == ".."))
            .prop_map(Program::ExecutablePath),
    ];
    // Arguments may hold any characters XML can carry, including leading and trailing spaces.
    let arg = "[ -~\u{e9}\u{4e2d}\t\n]{0,12}";
    (
        program,
        proptest::collection::vec(arg, 0..6),
        proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,6}", arg, 0..4),
        proptest::collection::btree_map(
            "[a-z]{1,6}(/[a-z]{1,6}){0,2}",
            (sha256(), 0u32..0o7777),
            0..4,
        ),
        proptest::option::of(0u64..=604_800),
    )
        .prop_map(|(program, args, env, files, wall_clock_seconds)| {
            let mut task = TaskDescription::new(program);
            task.args = args;
            task.env = env.into_iter().collect();
            task.files = files
                .into_iter()
                .map(|(path, (sha256, mode))| TaskFile { path, sha256, mode })
                .collect();
            task.wall_clock_seconds = wall_clock_seconds;
            task
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_all_parsers(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,2000}") {
        check_all_parsers(text.as_bytes());
    }

    #[test]
    fn mutated_examples_never_panic(example in 0usize..64, mutations in proptest::collection::vec(mutation(), 1..8)) {
        let examples = valid_examples();
        let bytes = apply(examples[example % examples.len()].clone(), &mutations);
        check_all_parsers(&bytes);
    }

    #[test]
    fn generated_requirements_round_trip(requirements in requirements()) {
        let xml = requirements.to_xml();
        prop_assert_eq!(EnvironmentalRequirements::parse(xml.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?, requirements);
    }

    #[test]
    fn generated_tasks_round_trip(task in task()) {
        let xml = task.to_xml();
        prop_assert_eq!(TaskDescription::parse(xml.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?, task);
    }

    #[test]
    fn patterns_agree_with_their_xsd_regexes(
        index in 0usize..64,
        noise in "[A-Za-z0-9_.:+/\\- \u{e9}]{0,80}",
        seed in any::<u64>(),
    ) {
        let patterns = all_patterns();
        let pattern = patterns[index % patterns.len()];
        let regex = regex::Regex::new(&format!("^(?:{})$", pattern.xsd)).expect("XSD pattern compiles as a Rust regex");
        let accepts = |s: &str| regex.is_match(s) && s.chars().count() <= usize::try_from(pattern.max_chars).unwrap_or(usize::MAX);
        prop_assert_eq!((pattern.matches)(&noise), accepts(&noise), "pattern {} on {:?}", pattern.xsd, noise);
        // And on a string the pattern itself generates.
        let generator = proptest::string::string_regex(pattern.xsd).expect("generator");
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            ProptestConfig::default(),
            proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&seed.to_le_bytes());
                bytes
            }),
        );
        let sample = generator.new_tree(&mut runner).expect("sample").current();
        prop_assert_eq!((pattern.matches)(&sample), accepts(&sample), "pattern {} on {:?}", pattern.xsd, sample);
    }
}
