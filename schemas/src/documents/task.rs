//! `TaskDescription`: what to run in a session (paper, section II-B.2, "deploy task"). The
//! program and any files travel beside the document as payloads, each named here by the SHA-256
//! of its bytes, so the document stays small and the server can check every byte it received.
//!
//! ```
//! use xeno_schemas::documents::{Document, Program, TaskDescription};
//!
//! let hash = "a".repeat(64);
//! let xml = format!(r#"<TaskDescription>
//!   <Name>hello</Name>
//!   <WasmModule sha256="{hash}"/>
//!   <Args><Arg>--greet</Arg><Arg>world</Arg></Args>
//!   <Env><Var name="LANG">C</Var></Env>
//! </TaskDescription>"#);
//! let task = TaskDescription::parse(xml.as_bytes())?;
//! assert_eq!(task.program, Program::WasmModule { sha256: hash, entry: None });
//! assert_eq!(task.args, ["--greet", "world"]);
//! # Ok::<(), xeno_schemas::DocumentErrors>(())
//! ```

use super::common::{EXTENSIONS, NAME, Reader, SHA256_TYPE, extensions_element};
use super::document::impl_document;
use crate::schema::model::{
    Content, DocumentSchema, ElementDecl, Particle, Pattern, SimpleKind, SimpleType, Term, leaf,
    optional, optional_attribute, repeated, required_attribute,
};
use crate::schema::validate::Problem;
use crate::xml::{Element, Limits};

/// Most arguments to one task, as Linux bounds `argv` (our bound is tighter).
pub const ARGS_MAX: u32 = 1024;
/// Most environment variables of one task.
pub const ENV_VARS_MAX: u32 = 256;
/// Most files shipped with one task.
pub const FILES_MAX: u32 = 1024;

fn path_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn is_session_path(value: &str) -> bool {
    if value == "/" {
        return true;
    }
    let relative = value.strip_prefix('/').unwrap_or(value);
    !relative.is_empty()
        && relative
            .split('/')
            .all(|segment| !segment.is_empty() && segment.bytes().all(path_segment_byte))
}

/// Paths inside the session's directory: `/` is its root; a leading `/` is optional.
static SESSION_PATH: Pattern = Pattern {
    xsd: "/|/?[A-Za-z0-9_.\\-]+(/[A-Za-z0-9_.\\-]+)*",
    max_chars: 1024,
    matches: is_session_path,
    description: "a path inside the session directory (segments of letters, digits, '_', '.' or '-' \
                  separated by '/', at most 1024 characters)",
};

static SESSION_PATH_TYPE: SimpleType = SimpleType {
    name: "SessionPath",
    doc: "A path inside the session's own directory, which the task sees as its root. '.' and '..' \
          segments are refused.",
    kind: SimpleKind::Pattern(&SESSION_PATH),
};

static ENTRY_TYPE: SimpleType = SimpleType {
    name: "EntryPoint",
    doc: "The exported function to call.",
    kind: SimpleKind::Token {
        min_chars: 1,
        max_chars: 256,
    },
};

static ARGUMENT_TYPE: SimpleType = SimpleType {
    name: "Argument",
    doc: "One argument or environment value, whitespace preserved, at most 4,096 characters.",
    kind: SimpleKind::String {
        min_chars: 0,
        max_chars: 4096,
    },
};

static ENV_NAME_PATTERN: Pattern = Pattern {
    xsd: "[A-Za-z_][A-Za-z0-9_]{0,127}",
    max_chars: 128,
    matches: |v| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    },
    description: "an environment variable name (a letter or '_', then letters, digits or '_')",
};

static ENV_NAME_TYPE: SimpleType = SimpleType {
    name: "EnvironmentVariableName",
    doc: "An environment variable name.",
    kind: SimpleKind::Pattern(&ENV_NAME_PATTERN),
};

static FILE_MODE_PATTERN: Pattern = Pattern {
    xsd: "[0-7]{3,4}",
    max_chars: 4,
    matches: |v| (3..=4).contains(&v.len()) && v.bytes().all(|b| (b'0'..=b'7').contains(&b)),
    description: "an octal file mode such as 0644",
};

static FILE_MODE_TYPE: SimpleType = SimpleType {
    name: "FileMode",
    doc: "Unix permission bits in octal.",
    kind: SimpleKind::Pattern(&FILE_MODE_PATTERN),
};

static WALL_SECONDS_TYPE: SimpleType = SimpleType {
    name: "WallClockSeconds",
    doc: "A wall-clock time limit in seconds (at most a week).",
    kind: SimpleKind::Unsigned { max: 604_800 },
};

static OUTPUT_BYTES_TYPE: SimpleType = SimpleType {
    name: "OutputBytes",
    doc: "A cap in bytes on the output kept for a task (at most 1 GiB).",
    kind: SimpleKind::Unsigned { max: 1 << 30 },
};

const PAYLOAD_SHA256: crate::schema::model::AttributeDecl = required_attribute(
    "sha256",
    &SHA256_TYPE,
    "SHA-256 of the payload bytes sent beside this document.",
);

static NAME_ELEMENT: ElementDecl = leaf("Name", &NAME, "The client's name for the task.");
static WASM_MODULE: ElementDecl = ElementDecl {
    name: "WasmModule",
    doc: "Run a WebAssembly core module (WASI preview 1).",
    attributes: &[
        PAYLOAD_SHA256,
        optional_attribute(
            "entry",
            &ENTRY_TYPE,
            "The export to call; _start when absent.",
        ),
    ],
    content: Content::Empty,
};
static WASM_COMPONENT: ElementDecl = ElementDecl {
    name: "WasmComponent",
    doc: "Run a WebAssembly component through its wasi:cli/run export (WASI preview 2).",
    attributes: &[PAYLOAD_SHA256],
    content: Content::Empty,
};
static EXECUTABLE: ElementDecl = ElementDecl {
    name: "Executable",
    doc: "Run a static Linux executable sent as a payload.",
    attributes: &[PAYLOAD_SHA256],
    content: Content::Empty,
};
static EXECUTABLE_PATH: ElementDecl = leaf(
    "ExecutablePath",
    &SESSION_PATH_TYPE,
    "Run an executable already in the session directory (shipped earlier, or among Files).",
);
static ARGV0: ElementDecl = leaf(
    "Argv0",
    &ARGUMENT_TYPE,
    "The program name the task sees as argv[0] (multi-call binaries such as busybox choose their \
     applet by it); defaults to the executable's file name or the task name.",
);
static ARG: ElementDecl = leaf("Arg", &ARGUMENT_TYPE, "One argument.");
static ARGS: ElementDecl = ElementDecl {
    name: "Args",
    doc: "Arguments after argv[0], in order.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&ARG, 0, ARGS_MAX)]),
};
static VAR: ElementDecl = ElementDecl {
    name: "Var",
    doc: "One environment variable.",
    attributes: &[required_attribute(
        "name",
        &ENV_NAME_TYPE,
        "The variable's name.",
    )],
    content: Content::Simple(&ARGUMENT_TYPE),
};
static ENV: ElementDecl = ElementDecl {
    name: "Env",
    doc: "The task's environment variables; nothing else is inherited.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&VAR, 0, ENV_VARS_MAX)]),
};
static WORKING_DIR: ElementDecl = leaf(
    "WorkingDir",
    &SESSION_PATH_TYPE,
    "The directory the task starts in; the session root when absent.",
);
static FILE: ElementDecl = ElementDecl {
    name: "File",
    doc: "A file to place in the session directory before the task starts.",
    attributes: &[
        required_attribute("path", &SESSION_PATH_TYPE, "Where the file goes."),
        PAYLOAD_SHA256,
        optional_attribute(
            "mode",
            &FILE_MODE_TYPE,
            "Permission bits; 0644 when absent.",
        ),
    ],
    content: Content::Empty,
};
static FILES: ElementDecl = ElementDecl {
    name: "Files",
    doc: "Files to place in the session directory, each sent as a payload.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&FILE, 1, FILES_MAX)]),
};
static WALL_CLOCK: ElementDecl = leaf(
    "WallClockSeconds",
    &WALL_SECONDS_TYPE,
    "Stop the task after this much real time.",
);
static OUTPUT_BYTES: ElementDecl = leaf(
    "OutputBytes",
    &OUTPUT_BYTES_TYPE,
    "Keep at most this many bytes of the task's output for later reading; beyond it output is counted but not kept.",
);
static TASK_LIMITS: ElementDecl = ElementDecl {
    name: "Limits",
    doc: "Limits on this task, within the session's own.",
    attributes: &[],
    content: Content::Sequence(&[optional(&WALL_CLOCK), optional(&OUTPUT_BYTES)]),
};

static ROOT: ElementDecl = ElementDecl {
    name: "TaskDescription",
    doc: "A task to deploy into an existing session (paper, section II-B.2).",
    attributes: &[],
    content: Content::Sequence(&[
        optional(&NAME_ELEMENT),
        Particle {
            term: Term::Choice(&[&WASM_MODULE, &WASM_COMPONENT, &EXECUTABLE, &EXECUTABLE_PATH]),
            min: 1,
            max: 1,
        },
        optional(&ARGV0),
        optional(&ARGS),
        optional(&ENV),
        optional(&WORKING_DIR),
        optional(&FILES),
        optional(&TASK_LIMITS),
        optional(&EXTENSIONS),
    ]),
};

/// The schema of [`TaskDescription`]. Larger than the default limits: a task may carry up to
/// 1,024 arguments and files.
pub static SCHEMA: DocumentSchema = DocumentSchema {
    root: &ROOT,
    limits: Limits {
        document_bytes_max: 256 * 1024,
        elements_max: 4096,
        ..Limits::DEFAULT
    },
    xsd_file: "TaskDescription.xsd",
};

/// What the task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A core module from the payload with this hash; `entry` defaults to `_start`.
    WasmModule {
        /// SHA-256 of the module bytes.
        sha256: String,
        /// The export to call.
        entry: Option<String>,
    },
    /// A component from the payload with this hash.
    WasmComponent {
        /// SHA-256 of the component bytes.
        sha256: String,
    },
    /// A static Linux executable from the payload with this hash.
    Executable {
        /// SHA-256 of the executable.
        sha256: String,
    },
    /// An executable already in the session directory.
    ExecutablePath(String),
}

/// A file placed in the session directory before the task starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFile {
    /// Where, relative to the session root.
    pub path: String,
    /// SHA-256 of its bytes (a payload).
    pub sha256: String,
    /// Unix permission bits.
    pub mode: u32,
}

/// A parsed `TaskDescription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDescription {
    /// `Name`.
    pub name: Option<String>,
    /// What to run.
    pub program: Program,
    /// `Argv0`.
    pub argv0: Option<String>,
    /// `Args/Arg`, in order.
    pub args: Vec<String>,
    /// `Env/Var`, in order (names unique).
    pub env: Vec<(String, String)>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `Files/File`.
    pub files: Vec<TaskFile>,
    /// `Limits/WallClockSeconds`.
    pub wall_clock_seconds: Option<u64>,
    /// `Limits/OutputBytes`.
    pub output_bytes: Option<u64>,
    /// `Extensions`.
    pub extensions: Vec<Element>,
}

impl TaskDescription {
    /// A task that runs `program` with no arguments.
    pub fn new(program: Program) -> Self {
        TaskDescription {
            name: None,
            program,
            argv0: None,
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            files: Vec::new(),
            wall_clock_seconds: None,
            output_bytes: None,
            extensions: Vec::new(),
        }
    }

    /// Every payload hash the task needs, program first, without repeats.
    pub fn payload_hashes(&self) -> Vec<&str> {
        let mut hashes: Vec<&str> = Vec::new();
        let program = match &self.program {
            Program::WasmModule { sha256, .. }
            | Program::WasmComponent { sha256 }
            | Program::Executable { sha256 } => Some(sha256.as_str()),
            Program::ExecutablePath(_) => None,
        };
        for hash in program
            .into_iter()
            .chain(self.files.iter().map(|file| file.sha256.as_str()))
        {
            if !hashes.contains(&hash) {
                hashes.push(hash);
            }
        }
        hashes
    }
}

/// Refuses `.` and `..` segments, which the XSD pattern cannot exclude.
fn check_session_path(reader: &Reader<'_, '_>, path: &str) -> Result<(), Problem> {
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(reader.problem(format!(
            "path {path:?} has a '.' or '..' segment; paths stay inside the session"
        )));
    }
    Ok(())
}

fn read(root: &Reader<'_, '_>) -> Result<TaskDescription, Problem> {
    let program_reader = root
        .children("WasmModule")
        .into_iter()
        .chain(root.children("WasmComponent"))
        .chain(root.children("Executable"))
        .chain(root.children("ExecutablePath"))
        .next()
        .ok_or_else(|| root.problem("no program"))?;
    let program = match program_reader.name() {
        "WasmModule" => Program::WasmModule {
            sha256: program_reader.required_attribute_text("sha256")?,
            entry: program_reader.attribute_text("entry")?,
        },
        "WasmComponent" => Program::WasmComponent {
            sha256: program_reader.required_attribute_text("sha256")?,
        },
        "Executable" => Program::Executable {
            sha256: program_reader.required_attribute_text("sha256")?,
        },
        _ => {
            let path = program_reader.text()?;
            check_session_path(&program_reader, &path)?;
            Program::ExecutablePath(path)
        }
    };
    let args = match root.child("Args") {
        Some(args) => args
            .children("Arg")
            .iter()
            .map(Reader::text)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(env_reader) = root.child("Env") {
        for var in env_reader.children("Var") {
            let name = var.required_attribute_text("name")?;
            if env.iter().any(|(existing, _)| *existing == name) {
                return Err(var.problem(format!("environment variable {name} is set twice")));
            }
            env.push((name, var.text()?));
        }
    }
    let working_dir = match root.child("WorkingDir") {
        Some(dir) => {
            let path = dir.text()?;
            check_session_path(&dir, &path)?;
            Some(path)
        }
        None => None,
    };
    let mut files: Vec<TaskFile> = Vec::new();
    if let Some(files_reader) = root.child("Files") {
        for file in files_reader.children("File") {
            let path = file.required_attribute_text("path")?;
            check_session_path(&file, &path)?;
            let normalized = path.trim_start_matches('/');
            if files
                .iter()
                .any(|existing| existing.path.trim_start_matches('/') == normalized)
            {
                return Err(file.problem(format!("file {path:?} is listed twice")));
            }
            let mode = match file.attribute_text("mode")? {
                Some(mode) => {
                    u32::from_str_radix(&mode, 8).map_err(|_| file.problem("bad mode"))?
                }
                None => 0o644,
            };
            files.push(TaskFile {
                path,
                sha256: file.required_attribute_text("sha256")?,
                mode,
            });
        }
    }
    let limits = root.child("Limits");
    Ok(TaskDescription {
        name: root.child_text("Name")?,
        program,
        argv0: root.child_text("Argv0")?,
        args,
        env,
        working_dir,
        files,
        wall_clock_seconds: limits
            .as_ref()
            .map(|l| l.child_unsigned("WallClockSeconds"))
            .transpose()?
            .flatten(),
        output_bytes: limits
            .as_ref()
            .map(|l| l.child_unsigned("OutputBytes"))
            .transpose()?
            .flatten(),
        extensions: root.extensions(),
    })
}

fn write(task: &TaskDescription) -> Element {
    let mut root = Element::new("TaskDescription").with_optional_leaf("Name", task.name.clone());
    root = root.with_child(match &task.program {
        Program::WasmModule { sha256, entry } => {
            let element = Element::new("WasmModule").with_attribute("sha256", sha256.clone());
            match entry {
                Some(entry) => element.with_attribute("entry", entry.clone()),
                None => element,
            }
        }
        Program::WasmComponent { sha256 } => {
            Element::new("WasmComponent").with_attribute("sha256", sha256.clone())
        }
        Program::Executable { sha256 } => {
            Element::new("Executable").with_attribute("sha256", sha256.clone())
        }
        Program::ExecutablePath(path) => Element::new("ExecutablePath").with_text(path.clone()),
    });
    root = root.with_optional_leaf("Argv0", task.argv0.clone());
    if !task.args.is_empty() {
        let mut args = Element::new("Args");
        for arg in &task.args {
            args = args.with_leaf("Arg", arg.clone());
        }
        root = root.with_child(args);
    }
    if !task.env.is_empty() {
        let mut env = Element::new("Env");
        for (name, value) in &task.env {
            env = env.with_child(
                Element::new("Var")
                    .with_attribute("name", name.clone())
                    .with_text(value.clone()),
            );
        }
        root = root.with_child(env);
    }
    root = root.with_optional_leaf("WorkingDir", task.working_dir.clone());
    if !task.files.is_empty() {
        let mut files = Element::new("Files");
        for file in &task.files {
            files = files.with_child(
                Element::new("File")
                    .with_attribute("path", file.path.clone())
                    .with_attribute("sha256", file.sha256.clone())
                    .with_attribute("mode", format!("{:04o}", file.mode & 0o7777)),
            );
        }
        root = root.with_child(files);
    }
    let limits = Element::new("Limits")
        .with_optional_leaf(
            "WallClockSeconds",
            task.wall_clock_seconds.map(|v| v.to_string()),
        )
        .with_optional_leaf("OutputBytes", task.output_bytes.map(|v| v.to_string()));
    if !limits.children.is_empty() {
        root = root.with_child(limits);
    }
    if let Some(extensions) = extensions_element(&task.extensions) {
        root = root.with_child(extensions);
    }
    root
}

impl_document!(TaskDescription, SCHEMA, read, write);
