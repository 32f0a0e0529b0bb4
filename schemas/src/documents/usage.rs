//! `UsageRecord`: the annotation carried by each charge a XenoServer makes against a purchase
//! order (paper, section II-A.4): what was used over a period, what it cost, and what the
//! session was doing. The corp keeps every record; together they are the audit trail.

use super::common::{
    AMOUNT_TYPE, COUNT_TYPE, CURRENCY_TYPE, EXTENSIONS, IDENTIFIER_TYPE, Money, OBJECT_ID_TYPE,
    Reader, TEXT_TYPE, TIMESTAMP_TYPE, extensions_element, money_element,
};
use super::document::impl_document;
use crate::schema::model::{
    Content, DocumentSchema, ElementDecl, SimpleKind, SimpleType, leaf, one, optional, repeated,
    required_attribute,
};
use crate::schema::types::format_date_time;
use crate::schema::validate::Problem;
use crate::xml::{Element, Limits};
use time::OffsetDateTime;

/// Most tasks listed in one record.
pub const TASKS_MAX: u32 = 64;

static MB_SECONDS_TYPE: SimpleType = SimpleType {
    name: "MegabyteSeconds",
    doc: "Memory held over time, in megabyte-seconds, to the millisecond.",
    kind: SimpleKind::Decimal {
        signed: false,
        integer_digits: 15,
        fraction_digits: 3,
    },
};

static TASK_STATE_TYPE: SimpleType = SimpleType {
    name: "TaskState",
    doc: "A task's state at the end of the period.",
    kind: SimpleKind::Enumeration(&["pending", "running", "exited", "failed", "stopped"]),
};

static ORDER: ElementDecl = leaf("Order", &OBJECT_ID_TYPE, "The purchase order charged.");
static SESSION: ElementDecl = leaf(
    "Session",
    &OBJECT_ID_TYPE,
    "The session whose usage this is.",
);
static SEQUENCE: ElementDecl = leaf(
    "Sequence",
    &COUNT_TYPE,
    "The charge's sequence number on the order: charges are idempotent by (order, sequence).",
);
static PERIOD_START: ElementDecl = leaf(
    "PeriodStart",
    &TIMESTAMP_TYPE,
    "Start of the metered period.",
);
static PERIOD_END: ElementDecl = leaf("PeriodEnd", &TIMESTAMP_TYPE, "End of the metered period.");
static CPU_MS: ElementDecl = leaf("CPUms", &COUNT_TYPE, "CPU time used, milliseconds.");
static MEMORY_MBS: ElementDecl = leaf(
    "MemoryMBs",
    &MB_SECONDS_TYPE,
    "Memory held, megabyte-seconds.",
);
static NET_IN: ElementDecl = leaf("NetworkBytesIn", &COUNT_TYPE, "Bytes received.");
static NET_OUT: ElementDecl = leaf("NetworkBytesOut", &COUNT_TYPE, "Bytes sent.");
static FUEL: ElementDecl = leaf(
    "Fuel",
    &COUNT_TYPE,
    "Wasm fuel consumed: a deterministic count of work.",
);
static SYSCALLS: ElementDecl = leaf(
    "Syscalls",
    &COUNT_TYPE,
    "System calls served for the session (Linux domains).",
);
static OUTPUT_BYTES: ElementDecl = leaf(
    "OutputBytes",
    &COUNT_TYPE,
    "Bytes of console and task output produced.",
);
static CHARGE: ElementDecl = ElementDecl {
    name: "Charge",
    doc: "What the server charges for this record, priced by its price sheet.",
    attributes: &[required_attribute(
        "currency",
        &CURRENCY_TYPE,
        "The currency.",
    )],
    content: Content::Simple(&AMOUNT_TYPE),
};
static ACTIVITY: ElementDecl = leaf(
    "Activity",
    &TEXT_TYPE,
    "What the session was doing, in words.",
);
static TASK: ElementDecl = ElementDecl {
    name: "Task",
    doc: "A task running or finished during the period.",
    attributes: &[
        required_attribute("id", &OBJECT_ID_TYPE, "The task's id."),
        required_attribute(
            "state",
            &TASK_STATE_TYPE,
            "Its state at the end of the period.",
        ),
        required_attribute(
            "program",
            &IDENTIFIER_TYPE,
            "Its program kind: WasmModule, WasmComponent, Executable, ...",
        ),
    ],
    content: Content::Empty,
};
static TASKS: ElementDecl = ElementDecl {
    name: "Tasks",
    doc: "The session's tasks during the period.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&TASK, 1, TASKS_MAX)]),
};
static ROOT: ElementDecl = ElementDecl {
    name: "UsageRecord",
    doc: "The annotation of one charge: usage over a period and what the session was doing (paper, section II-A.4).",
    attributes: &[],
    content: Content::Sequence(&[
        one(&ORDER),
        one(&SESSION),
        one(&SEQUENCE),
        one(&PERIOD_START),
        one(&PERIOD_END),
        one(&CPU_MS),
        one(&MEMORY_MBS),
        optional(&NET_IN),
        optional(&NET_OUT),
        optional(&FUEL),
        optional(&SYSCALLS),
        optional(&OUTPUT_BYTES),
        one(&CHARGE),
        optional(&ACTIVITY),
        optional(&TASKS),
        optional(&EXTENSIONS),
    ]),
};

/// The schema of [`UsageRecord`].
pub static SCHEMA: DocumentSchema = DocumentSchema {
    root: &ROOT,
    limits: Limits {
        document_bytes_max: 32 * 1024,
        ..Limits::DEFAULT
    },
    xsd_file: "UsageRecord.xsd",
};

/// A task's state, as a usage record reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Deployed, not started.
    Pending,
    /// Running.
    Running,
    /// Exited on its own.
    Exited,
    /// Ended by a fault (trap, signal, limit).
    Failed,
    /// Stopped by the server or client.
    Stopped,
}

impl TaskState {
    /// The name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Exited => "exited",
            TaskState::Failed => "failed",
            TaskState::Stopped => "stopped",
        }
    }

    fn from_name(name: &str) -> Option<TaskState> {
        [
            TaskState::Pending,
            TaskState::Running,
            TaskState::Exited,
            TaskState::Failed,
            TaskState::Stopped,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }
}

/// One task in a usage record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskActivity {
    /// Task id.
    pub id: String,
    /// State at the end of the period.
    pub state: TaskState,
    /// Program kind.
    pub program: String,
}

/// A parsed `UsageRecord`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The order charged.
    pub order_id: String,
    /// The session.
    pub session_id: String,
    /// Sequence number of the charge.
    pub sequence: u64,
    /// Period start.
    pub period_start: OffsetDateTime,
    /// Period end.
    pub period_end: OffsetDateTime,
    /// CPU milliseconds.
    pub cpu_ms: u64,
    /// Memory in megabyte-milliseconds (`MemoryMBs` × 1000).
    pub memory_mb_ms: u64,
    /// Bytes received.
    pub network_bytes_in: Option<u64>,
    /// Bytes sent.
    pub network_bytes_out: Option<u64>,
    /// Wasm fuel.
    pub fuel: Option<u64>,
    /// System calls.
    pub syscalls: Option<u64>,
    /// Output bytes.
    pub output_bytes: Option<u64>,
    /// The amount charged.
    pub charge: Money,
    /// What the session was doing.
    pub activity: Option<String>,
    /// Its tasks.
    pub tasks: Vec<TaskActivity>,
    /// Extensions.
    pub extensions: Vec<Element>,
}

fn read(root: &Reader<'_, '_>) -> Result<UsageRecord, Problem> {
    let period_start = root.required_timestamp("PeriodStart")?;
    let period_end = root.required_timestamp("PeriodEnd")?;
    if period_end < period_start {
        return Err(root
            .required_child("PeriodEnd")?
            .problem("the period ends before it starts"));
    }
    let memory = root.required_child("MemoryMBs")?;
    let memory_mb_ms = memory
        .decimal()?
        .to_scaled(3)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| memory.problem("out of range"))?;
    let mut tasks = Vec::new();
    if let Some(tasks_reader) = root.child("Tasks") {
        for task in tasks_reader.children("Task") {
            let state = task.required_attribute_text("state")?;
            tasks.push(TaskActivity {
                id: task.required_attribute_text("id")?,
                state: TaskState::from_name(&state).ok_or_else(|| task.problem("unknown state"))?,
                program: task.required_attribute_text("program")?,
            });
        }
    }
    Ok(UsageRecord {
        order_id: root.required_text("Order")?,
        session_id: root.required_text("Session")?,
        sequence: root.required_unsigned("Sequence")?,
        period_start,
        period_end,
        cpu_ms: root.required_unsigned("CPUms")?,
        memory_mb_ms,
        network_bytes_in: root.child_unsigned("NetworkBytesIn")?,
        network_bytes_out: root.child_unsigned("NetworkBytesOut")?,
        fuel: root.child_unsigned("Fuel")?,
        syscalls: root.child_unsigned("Syscalls")?,
        output_bytes: root.child_unsigned("OutputBytes")?,
        charge: root.required_money("Charge")?,
        activity: root.child_text("Activity")?,
        tasks,
        extensions: root.extensions(),
    })
}

fn write(record: &UsageRecord) -> Element {
    let memory = crate::schema::Decimal {
        mantissa: i128::from(record.memory_mb_ms),
        scale: 3,
    };
    let mut root = Element::new("UsageRecord")
        .with_leaf("Order", record.order_id.clone())
        .with_leaf("Session", record.session_id.clone())
        .with_leaf("Sequence", record.sequence.to_string())
        .with_leaf("PeriodStart", format_date_time(record.period_start))
        .with_leaf("PeriodEnd", format_date_time(record.period_end))
        .with_leaf("CPUms", record.cpu_ms.to_string())
        .with_leaf("MemoryMBs", memory.to_plain())
        .with_optional_leaf(
            "NetworkBytesIn",
            record.network_bytes_in.map(|v| v.to_string()),
        )
        .with_optional_leaf(
            "NetworkBytesOut",
            record.network_bytes_out.map(|v| v.to_string()),
        )
        .with_optional_leaf("Fuel", record.fuel.map(|v| v.to_string()))
        .with_optional_leaf("Syscalls", record.syscalls.map(|v| v.to_string()))
        .with_optional_leaf("OutputBytes", record.output_bytes.map(|v| v.to_string()))
        .with_child(money_element("Charge", &record.charge))
        .with_optional_leaf("Activity", record.activity.clone());
    if !record.tasks.is_empty() {
        let mut tasks = Element::new("Tasks");
        for task in &record.tasks {
            tasks = tasks.with_child(
                Element::new("Task")
                    .with_attribute("id", task.id.clone())
                    .with_attribute("state", task.state.as_str())
                    .with_attribute("program", task.program.clone()),
            );
        }
        root = root.with_child(tasks);
    }
    if let Some(extensions) = extensions_element(&record.extensions) {
        root = root.with_child(extensions);
    }
    root
}

impl_document!(UsageRecord, SCHEMA, read, write);
