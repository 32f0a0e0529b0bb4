//! Ready-made guests for task managers that run static Linux executables: each guest is
//! Debian's static busybox (`busybox-static`) running `sh -c SCRIPT` with shell builtins only,
//! so it needs no processes beyond the one. The Linux task manager's conformance test uses
//! them; a plugin for another Linux-ABI environment can too. Any POSIX shell binary serves
//! (the process plugin's tests send the host's `/bin/sh`).

use super::guests::{FLOOD_LINE, Guest, Guests};
use sha2::{Digest, Sha256};
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::Payload;

/// Guests that are busybox shell scripts, for `EnvType` `env_type`.
pub struct BusyboxGuests {
    env_type: String,
    busybox: Payload,
}

impl BusyboxGuests {
    /// Guests from the bytes of a static busybox (`/bin/busybox` from Debian's
    /// `busybox-static`), or of any shell the task manager can run.
    pub fn new(env_type: &str, busybox: Vec<u8>) -> Self {
        BusyboxGuests {
            env_type: env_type.to_owned(),
            busybox: Payload {
                sha256: hex::encode(Sha256::digest(&busybox)),
                data: busybox,
            },
        }
    }

    /// A task running `script`, with `args` as `$1`... and `env` as its environment.
    pub fn script(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Guest {
        Guest {
            task_xml: self.task(script, args, env).to_xml(),
            payloads: vec![self.payload()],
        }
    }

    /// The TaskDescription of a script, to adjust before sending.
    pub fn task(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> TaskDescription {
        let mut task = TaskDescription::new(Program::Executable {
            sha256: self.busybox.sha256.clone(),
        });
        task.name = Some("sh".into());
        task.argv0 = Some("sh".into());
        // sh -c SCRIPT NAME ARGS...: NAME becomes $0, ARGS become $1...
        task.args = ["-c", script, "sh"]
            .iter()
            .chain(args)
            .map(|arg| (*arg).to_owned())
            .collect();
        task.env = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        task
    }

    /// The shell as a payload.
    pub fn payload(&self) -> Payload {
        self.busybox.clone()
    }
}

impl Guests for BusyboxGuests {
    fn env_type(&self) -> &str {
        &self.env_type
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
