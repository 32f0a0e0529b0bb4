//! The system call layer fuzzed from inside a domain: a guest reads records (number and six
//! arguments) from a file and makes each call. Arguments are arbitrary 64-bit values mixed
//! with pointers into a buffer of the guest's (filled with arbitrary bytes) and into the
//! domain's own special pages, so calls get past their first checks. Whatever the calls do,
//! the VMM must not panic (no "internal error" ends a task), nothing outside the session
//! directory may change, and a domain beside the fuzzed one must keep working.
//!
//! A bounded number of cases (proptest, `FUZZ_CASES`, each `CALLS_PER_CASE` calls) runs in
//! the ordinary test run.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::Path;
use support::*;

/// Cases per run, each a fresh task.
const FUZZ_CASES: u32 = 64;
/// Calls per case.
const CALLS_PER_CASE: usize = 96;
/// Calls excluded because they end the task, sleep for arbitrary times or wait for a signal
/// no one sends (they are tested on their own): rt_sigreturn, pause, nanosleep, exit, kill,
/// rt_sigsuspend, tkill, clock_nanosleep, exit_group, tgkill.
const EXCLUDED: &[u64] = &[15, 34, 35, 60, 62, 130, 200, 230, 231, 234];

const FUZZ_C: &str = include_str!("support/fuzz_guest.c");

fn argument() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..4096,
        (0u64..0xfff0).prop_map(|offset| 0xB0B0_0000_0000_0000 | offset),
        Just(0xffff_ff80_0000_0000u64),
        Just(0x7fff_f000_0000u64),
        Just(0x7fff_f000_1000u64),
        Just(0x7fff_f000_2000u64),
        Just(0x40_0000u64),
        Just((-100i64) as u64),
        Just(u64::MAX),
    ]
}

fn call() -> impl Strategy<Value = [u64; 7]> {
    let number = prop_oneof![0u64..335, 0u64..500, any::<u64>()]
        .prop_filter("excluded", |n| !EXCLUDED.contains(n));
    (number, proptest::array::uniform6(argument()))
        .prop_map(|(n, args)| [n, args[0], args[1], args[2], args[3], args[4], args[5]])
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable") {
        let entry = entry.expect("entry");
        let data = std::fs::read(entry.path()).unwrap_or_default();
        found.push((entry.file_name().to_string_lossy().into_owned(), data));
    }
    found.sort();
    found
}

#[test]
fn arbitrary_system_calls_never_harm_the_host() {
    let Some(manager) = manager() else { return };
    let Some(program) = musl_program("fuzz", FUZZ_C) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The session directory sits beside a file the fuzzed calls must never reach.
    let outer = tempfile::tempdir().expect("outer");
    std::fs::write(outer.path().join("outside.txt"), b"untouched").expect("outside");
    let scratch = outer.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    let domain = runtime.block_on(create(&manager, limits(0, 64), Some(&scratch)));
    // A neighbour domain runs tasks beside the fuzzed one the whole time; each must work.
    let busybox = busybox();
    let neighbour = busybox.clone().map(|busybox| {
        let manager = manager.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let handle = runtime.spawn(async move {
            let domain = create(&manager, limits(0, 32), None).await;
            let mut runs = 0u32;
            while !stopping.load(std::sync::atomic::Ordering::Acquire) {
                runs += 1;
                let guest = Guest::new(&busybox, "echo", &["neighbour", &runs.to_string()]);
                let finished = run(&manager, &domain, &format!("n-{runs}"), &guest).await;
                assert_eq!(
                    finished.stdout_text(),
                    format!("neighbour {runs}\n"),
                    "the neighbour's task {runs}: {:?}",
                    finished.exit
                );
            }
            destroy(&manager, &domain).await;
            runs
        });
        (stop, handle)
    });
    let noise: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut runner = TestRunner::new(Config {
        cases: FUZZ_CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let case_number = std::cell::Cell::new(0u32);
    let outcomes = std::cell::RefCell::new(std::collections::BTreeMap::<String, u32>::new());
    let result = runner.run(
        &proptest::collection::vec(call(), CALLS_PER_CASE),
        |calls| {
            case_number.set(case_number.get() + 1);
            let mut cases = Vec::with_capacity(calls.len() * 56);
            for record in &calls {
                for word in record {
                    cases.extend_from_slice(&word.to_le_bytes());
                }
            }
            let mut guest = Guest::new(&program, "fuzz", &[])
                .file("cases.bin", &cases)
                .file("noise.bin", &noise);
            // A sequence may wait for ever as Linux would (a ppoll of nothing, say): the
            // wall-clock limit ends it.
            guest.task.wall_clock_seconds = Some(10);
            let finished = runtime.block_on(run(
                &manager,
                &domain,
                &format!("case-{}", case_number.get()),
                &guest,
            ));
            let reason = finished.exit.reason.clone();
            prop_assert!(
                !reason.contains("internal error"),
                "the VMM failed: {reason}"
            );
            let kind = reason.split(':').next().unwrap_or_default().to_owned();
            *outcomes.borrow_mut().entry(kind).or_default() += 1;
            Ok(())
        },
    );
    println!(
        "fuzz outcomes over {} cases: {:?}",
        case_number.get(),
        outcomes.borrow()
    );
    result.unwrap_or_else(|failure| panic!("{failure}"));
    runtime.block_on(destroy(&manager, &domain));
    if let Some((stop, handle)) = neighbour {
        stop.store(true, std::sync::atomic::Ordering::Release);
        let runs = runtime
            .block_on(handle)
            .expect("the neighbour's tasks all worked");
        println!("the neighbour ran {runs} tasks beside the fuzzed domain");
        assert!(
            runs >= 2,
            "the neighbour ran beside the fuzzing, not only after it"
        );
    }
    // Nothing outside the session directory changed.
    let outside: Vec<(String, Vec<u8>)> = snapshot(outer.path())
        .into_iter()
        .filter(|(name, _)| name != "scratch")
        .collect();
    assert_eq!(
        outside,
        vec![("outside.txt".to_owned(), b"untouched".to_vec())]
    );
    // And a domain created afterwards works.
    let Some(busybox) = busybox else { return };
    let after = runtime.block_on(create(&manager, limits(0, 32), None));
    let finished = runtime.block_on(run(
        &manager,
        &after,
        "echo",
        &Guest::new(&busybox, "echo", &["still", "fine"]),
    ));
    assert_eq!(finished.stdout_text(), "still fine\n");
    runtime.block_on(destroy(&manager, &after));
}

/// The plugin interface of the Linux task manager, fed arbitrary requests (decoded from
/// arbitrary bytes, or built from them field by field, with arbitrary executables for the ELF
/// loader): every answer is one the interface documents, and the manager keeps answering.
/// The same cases run unbounded under cargo-fuzz (`tests/fuzz`, target `vm_rpc`).
#[test]
fn arbitrary_requests_get_documented_answers() {
    let Some(manager) = manager() else { return };
    xeno_tests::fuzz::task_manager_properties(std::sync::Arc::new(manager), "Linux", 150);
}
