//! The task manager conformance suite (`xeno_tests::conformance`) against the Linux task
//! manager in process, with guests that are Debian's static busybox running `sh -c SCRIPT`
//! (shell builtins only: a domain has one process).

mod support;

use std::sync::Arc;
use std::time::Instant;
use support::{busybox, manager, payload};
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::Payload;
use xeno_schemas::taskmanager::DynTaskManager;
use xeno_tests::conformance::{self, FLOOD_LINE, Guest, Guests};

struct BusyboxGuests {
    busybox: Payload,
}

impl BusyboxGuests {
    fn script(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Guest {
        let mut task = TaskDescription::new(Program::Executable {
            sha256: self.busybox.sha256.clone(),
        });
        task.argv0 = Some("sh".into());
        task.args = ["-c", script, "sh"]
            .iter()
            .chain(args)
            .map(|arg| (*arg).to_owned())
            .collect();
        task.env = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Guest {
            task_xml: task.to_xml(),
            payloads: vec![self.busybox.clone()],
        }
    }
}

impl Guests for BusyboxGuests {
    fn env_type(&self) -> &str {
        "Linux"
    }

    fn hello(&self) -> Guest {
        self.script("printf 'hello\\n'", &[], &[])
    }

    fn exit_code(&self, code: u8) -> Guest {
        self.script(&format!("exit {code}"), &[], &[])
    }

    fn echo_args_env(&self, args: &[&str], greeting: &str) -> Guest {
        self.script(
            "printf '%s\\n' \"$*\"; printf '%s\\n' \"$XENO_GREETING\"",
            args,
            &[("XENO_GREETING", greeting)],
        )
    }

    fn stderr(&self) -> Guest {
        self.script("printf 'oops\\n' >&2", &[], &[])
    }

    fn spin(&self) -> Guest {
        self.script("while :; do :; done", &[], &[])
    }

    fn flood(&self, lines: u32) -> Guest {
        let line = String::from_utf8_lossy(&FLOOD_LINE[..FLOOD_LINE.len() - 1]).into_owned();
        let script =
            format!("i=0; while [ $i -lt {lines} ]; do printf '%s\\n' {line}; i=$((i + 1)); done");
        self.script(&script, &[], &[])
    }

    fn write_file(&self) -> Option<Guest> {
        Some(self.script("printf 'done\\n' > out.txt", &[], &[]))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passes_the_conformance_suite() {
    let (Some(manager), Some(busybox)) = (manager(), busybox()) else {
        return;
    };
    let guests = BusyboxGuests {
        busybox: payload(busybox),
    };
    let manager: DynTaskManager = Arc::new(manager);
    let started = Instant::now();
    match conformance::run_suite(manager, &guests).await {
        Ok(report) => println!("{report}\nsuite took {:?}", started.elapsed()),
        Err(failed) => panic!("{failed}"),
    }
}
