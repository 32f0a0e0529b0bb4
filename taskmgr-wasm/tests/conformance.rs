//! The task-manager conformance suite (`xeno_taskmgr_kit::conformance`), which every task manager must
//! pass, run against the built-in Wasm task manager in process. The guests are WAT modules, plus
//! C programs (Debian's clang and wasi-libc) where reading arguments and the environment is
//! easier said in C.

mod support;

use std::sync::Arc;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::Payload;
use xeno_taskmgr_kit::conformance::{Guest, Guests, run_suite};

struct WasmGuests {
    echo: Vec<u8>,
    writer: Vec<u8>,
}

fn guest(wasm: Vec<u8>, args: &[&str], env: &[(&str, &str)]) -> Guest {
    let sha256 = support::sha256(&wasm);
    let mut task = TaskDescription::new(Program::WasmModule {
        sha256: sha256.clone(),
        entry: None,
    });
    task.args = args.iter().map(|arg| (*arg).to_owned()).collect();
    task.env = env
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Guest {
        task_xml: task.to_xml(),
        payloads: vec![Payload { sha256, data: wasm }],
    }
}

/// A module that writes `bytes` to file descriptor `fd` `times` times, then exits with `code`.
fn writer_module(fd: u32, bytes: &[u8], times: u32, code: u32) -> Vec<u8> {
    let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
    support::wat(&format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "{escaped}")
            (func (export "_start") (local $i i32)
                (i32.store (i32.const 0) (i32.const 64))
                (i32.store (i32.const 4) (i32.const {len}))
                (block $done (loop $again
                    (br_if $done (i32.ge_u (local.get $i) (i32.const {times})))
                    (drop (call $write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br $again)))
                (call $exit (i32.const {code}))))"#,
        len = bytes.len()
    ))
}

impl Guests for WasmGuests {
    fn env_type(&self) -> &str {
        "Wasm"
    }

    fn hello(&self) -> Guest {
        guest(support::hello_module("hello\n"), &[], &[])
    }

    fn exit_code(&self, code: u8) -> Guest {
        guest(writer_module(1, b"", 0, u32::from(code)), &[], &[])
    }

    fn echo_args_env(&self, args: &[&str], greeting: &str) -> Guest {
        guest(self.echo.clone(), args, &[("XENO_GREETING", greeting)])
    }

    fn stderr(&self) -> Guest {
        guest(writer_module(2, b"oops\n", 1, 0), &[], &[])
    }

    fn spin(&self) -> Guest {
        guest(support::spin_module(), &[], &[])
    }

    fn flood(&self, lines: u32) -> Guest {
        guest(
            writer_module(1, xeno_taskmgr_kit::conformance::FLOOD_LINE, lines, 0),
            &[],
            &[],
        )
    }

    fn write_file(&self) -> Option<Guest> {
        Some(guest(self.writer.clone(), &[], &[]))
    }
}

const ECHO_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) printf(i > 1 ? " %s" : "%s", argv[i]);
    printf("\n%s\n", getenv("XENO_GREETING") ? getenv("XENO_GREETING") : "");
    return 0;
}
"#;

const WRITE_C: &str = r#"
#include <stdio.h>
int main(void) {
    FILE *f = fopen("/out.txt", "w");
    if (!f) return 1;
    fputs("done", f);
    return fclose(f) == 0 ? 0 : 2;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasm_task_manager_passes_the_conformance_suite() {
    let (Some(echo), Some(writer)) = (
        support::compile_c("conformance_echo", ECHO_C),
        support::compile_c("conformance_write", WRITE_C),
    ) else {
        return;
    };
    let manager: xeno_taskmgr_kit::DynTaskManager = Arc::new(support::manager());
    let report = run_suite(manager, &WasmGuests { echo, writer })
        .await
        .unwrap_or_else(|failed| panic!("{failed}"));
    println!("{report}");
}
