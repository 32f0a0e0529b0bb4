//! `xeno schema validate` as a script would use it: output per file and exit codes.

use std::path::PathBuf;
use std::process::Command;

fn example(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/examples")
        .join(path)
}

fn xeno(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xeno"))
        .args(args)
        .output()
        .expect("running xeno");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn valid_files_print_ok_and_exit_zero() {
    let paper = example("valid/paper-requirements.xml");
    let task = example("valid/task-wasm-hello.xml");
    let (code, stdout, _) = xeno(&[
        "schema".as_ref(),
        "validate".as_ref(),
        paper.as_os_str(),
        task.as_os_str(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        stdout,
        format!(
            "{}: ok (EnvironmentalRequirements)\n{}: ok (TaskDescription)\n",
            paper.display(),
            task.display()
        )
    );
}

#[test]
fn any_invalid_file_prints_its_error_and_exits_one() {
    let paper = example("valid/paper-requirements.xml");
    let bad = example("invalid/cpumsps-not-an-integer.xml");
    let (code, stdout, _) = xeno(&[
        "schema".as_ref(),
        "validate".as_ref(),
        paper.as_os_str(),
        bad.as_os_str(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(&format!("{}: ok", paper.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}: QoS/CPUmsps: expected a non-negative integer no greater than 1000000, got \"fast\" at 9:12",
            bad.display()
        )),
        "{stdout}"
    );
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let (code, _, stderr) = xeno(&[
        "schema".as_ref(),
        "validate".as_ref(),
        "/nonexistent/file.xml".as_ref(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("opening /nonexistent/file.xml"), "{stderr}");
}
