//! Arbitrary messages against the platform's RPC surfaces, shared by the property tests that
//! run in the ordinary test command and by the cargo-fuzz targets (`tests/fuzz/`).
//!
//! A case is a method and bytes. For a task manager the bytes are decoded as that method's
//! request (bytes that do not decode become a request built from them field by field, so
//! every case reaches the method), and the call is made through the plugin interface; for a
//! XenoServer they are sent as they are over gRPC. Whatever comes in, the answer must be one
//! the interface documents: never INTERNAL, UNKNOWN or DATA_LOSS (a bug, or a panic the
//! transport caught), and the service must still answer afterwards.

use prost::Message;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status};
use xeno_schemas::proto::common::v1::Payload;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::DynTaskManager;

/// The plugin interface's methods, in the order cases name them.
pub const TASK_MANAGER_METHODS: [&str; 8] = [
    "GetCapabilities",
    "CreateDomain",
    "DeployTask",
    "StreamOutput",
    "ReportUsage",
    "StopTask",
    "DestroyDomain",
    "InspectTask",
];

/// The XenoServer's methods, by gRPC path.
pub const SERVER_METHODS: [&str; 7] = [
    "/xenoserve.server.v1.XenoServer/QueryXenoServerStatus",
    "/xenoserve.server.v1.XenoServer/CreateSession",
    "/xenoserve.server.v1.XenoServer/DeployTask",
    "/xenoserve.server.v1.XenoServer/WatchSession",
    "/xenoserve.server.v1.XenoServer/TaskStatus",
    "/xenoserve.server.v1.XenoServer/DestroySession",
    "/xenoserve.server.v1.XenoServer/ListSessions",
];

/// Longest a case may take: a case that hangs is a finding too.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most events read from a fuzzed StreamOutput.
const STREAM_EVENTS_MAX: usize = 16;

/// Whether `status` is one a caller may be given for bad input.
fn documented(method: &str, status: &Status) -> Result<(), String> {
    match status.code() {
        Code::Internal | Code::Unknown | Code::DataLoss => Err(format!(
            "{method} answered {:?}: {}",
            status.code(),
            status.message()
        )),
        _ => Ok(()),
    }
}

/// Ids the cases draw on, so that arbitrary requests also meet the domains and tasks that
/// exist. `d-0` is never destroyed, so that cases keep meeting a live domain.
const IDS: [&str; 4] = ["d-0", "d-1", "t-1", "t-2"];
/// Ids DestroyDomain and CreateDomain draw on.
const DOOMED: [&str; 4] = ["d-1", "d-2", "d-3", "t-1"];

fn pick<'a>(bytes: &[u8], at: usize, choices: &[&'a str]) -> &'a str {
    choices[usize::from(bytes.get(at).copied().unwrap_or(0)) % choices.len()]
}

fn text(bytes: &[u8], from: usize) -> String {
    String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned()
}

/// A task description for arbitrary program bytes, valid as a document.
fn task_xml(bytes: &[u8]) -> (String, Vec<Payload>) {
    use sha2::{Digest, Sha256};
    use xeno_schemas::Document;
    use xeno_schemas::documents::{Program, TaskDescription};
    // Now and then a program that runs (a module whose start does nothing), so that cases
    // also meet running and ended tasks.
    const EMPTY_MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03,
        0x02, 0x01, 0x00, 0x07, 0x0a, 0x01, 0x06, 0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00, 0x00,
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
    ];
    let program = if bytes.first().is_some_and(|b| b % 5 == 3) {
        EMPTY_MODULE.to_vec()
    } else {
        bytes.get(2..).unwrap_or_default().to_vec()
    };
    let sha256 = hex::encode(Sha256::digest(&program));
    let kind = bytes.first().copied().unwrap_or(0) % 3;
    let description = TaskDescription::new(match kind {
        0 => Program::WasmModule {
            sha256: sha256.clone(),
            entry: None,
        },
        1 => Program::WasmComponent {
            sha256: sha256.clone(),
        },
        _ => Program::Executable {
            sha256: sha256.clone(),
        },
    });
    (
        description.to_xml(),
        vec![Payload {
            sha256,
            data: program,
        }],
    )
}

/// The request of method `index` from `bytes`: decoded as protobuf when it decodes, else
/// built field by field from the bytes (ids from [`IDS`], the rest arbitrary).
fn request<M: Message + Default>(bytes: &[u8], build: impl FnOnce(&[u8]) -> M) -> M {
    match M::decode(bytes) {
        Ok(message) if bytes.first().is_some_and(|b| b % 2 == 0) => message,
        _ => build(bytes),
    }
}

/// One case against a task manager serving `env_type`: method `method % 8`, request from
/// `bytes`. The method's
/// name and the code it answered, or the broken promise.
pub async fn task_manager_case(
    manager: &DynTaskManager,
    env_type: &str,
    method: u8,
    bytes: &[u8],
) -> Result<(&'static str, Code), String> {
    let name = TASK_MANAGER_METHODS[usize::from(method) % TASK_MANAGER_METHODS.len()];
    let call = async {
        let outcome: Result<(), Status> = match name {
            "GetCapabilities" => manager
                .get_capabilities(Request::new(pb::GetCapabilitiesRequest {}))
                .await
                .map(|_| ()),
            "CreateDomain" => {
                let request = request(bytes, |b| pb::CreateDomainRequest {
                    domain_id: pick(b, 0, &DOOMED).to_owned(),
                    // Mostly the manager's own type, so that creation gets past its check.
                    env_type: if b.get(3).is_some_and(|x| x % 4 == 0) {
                        text(b, 4)
                    } else {
                        env_type.to_owned()
                    },
                    version: String::new(),
                    limits: Some(pb::DomainLimits {
                        cpu_msps: u64::from(b.get(1).copied().unwrap_or(0)) * 4,
                        memory_mb: u64::from(b.get(2).copied().unwrap_or(0)) % 64,
                        output_bytes_max: 4096,
                        tasks_max: 4,
                        ..Default::default()
                    }),
                    requirements_xml: String::new(),
                    scratch_dir: String::new(),
                });
                manager
                    .create_domain(Request::new(request))
                    .await
                    .map(|_| ())
            }
            "DeployTask" => {
                let request = request(bytes, |b| {
                    let (task_xml, payloads) = task_xml(b);
                    pb::DeployTaskRequest {
                        // Mostly the live domain, with a task id of its own.
                        domain_id: pick(b, 0, &["d-0", "d-0", "d-0", "d-1"]).to_owned(),
                        task_id: format!("t-{}", b.get(1).copied().unwrap_or(0)),
                        task_xml,
                        payloads,
                    }
                });
                manager.deploy_task(Request::new(request)).await.map(|_| ())
            }
            "StreamOutput" => {
                let request = request(bytes, |b| pb::StreamOutputRequest {
                    domain_id: pick(b, 0, &IDS).to_owned(),
                    from_offset: std::iter::once((
                        pick(b, 1, &IDS).to_owned(),
                        u64::from(b.get(2).copied().unwrap_or(0)),
                    ))
                    .collect(),
                    follow: false,
                });
                match manager.stream_output(Request::new(request)).await {
                    Ok(stream) => {
                        let mut stream = stream.into_inner().take(STREAM_EVENTS_MAX);
                        let mut broken = Ok(());
                        while let Some(item) = stream.next().await {
                            if let Err(status) = item {
                                broken = Err(status);
                                break;
                            }
                        }
                        broken
                    }
                    Err(status) => Err(status),
                }
            }
            "ReportUsage" => {
                let request = request(bytes, |b| pb::ReportUsageRequest {
                    domain_id: pick(b, 0, &IDS).to_owned(),
                });
                manager
                    .report_usage(Request::new(request))
                    .await
                    .map(|_| ())
            }
            "StopTask" => {
                let request = request(bytes, |b| pb::StopTaskRequest {
                    domain_id: pick(b, 0, &IDS).to_owned(),
                    task_id: pick(b, 1, &IDS).to_owned(),
                    reason: text(b, 2),
                });
                manager.stop_task(Request::new(request)).await.map(|_| ())
            }
            "DestroyDomain" => {
                let mut request = request(bytes, |b| pb::DestroyDomainRequest {
                    domain_id: pick(b, 0, &DOOMED).to_owned(),
                    reason: text(b, 1),
                });
                if request.domain_id == "d-0" {
                    request.domain_id = "d-1".to_owned();
                }
                manager
                    .destroy_domain(Request::new(request))
                    .await
                    .map(|_| ())
            }
            _ => {
                let request = request(bytes, |b| pb::InspectTaskRequest {
                    domain_id: pick(b, 0, &IDS).to_owned(),
                    task_id: pick(b, 1, &IDS).to_owned(),
                });
                manager
                    .inspect_task(Request::new(request))
                    .await
                    .map(|_| ())
            }
        };
        match outcome {
            Ok(()) => Ok(Code::Ok),
            Err(status) => documented(name, &status).map(|()| status.code()),
        }
    };
    let code = tokio::time::timeout(CASE_TIMEOUT, call)
        .await
        .map_err(|_| format!("{name} did not answer within {CASE_TIMEOUT:?}"))??;
    // Whatever happened, it still answers.
    manager
        .get_capabilities(Request::new(pb::GetCapabilitiesRequest {}))
        .await
        .map_err(|status| format!("after {name}, GetCapabilities failed: {status}"))?;
    Ok((name, code))
}

/// Bytes in, bytes out: requests no generated client would send.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Sends `body` to `path` (unary, or the first message of a server stream) and returns the
/// status, if the call failed.
pub async fn raw_call(
    channel: tonic::transport::Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    if path.path().ends_with("WatchSession") {
        let stream = grpc.server_streaming(Request::new(body), path, Raw).await?;
        let mut stream = stream.into_inner().take(STREAM_EVENTS_MAX);
        while let Some(item) = stream.next().await {
            item?;
        }
        return Ok(());
    }
    grpc.unary(Request::new(body), path, Raw).await.map(|_| ())
}

/// One case against a XenoServer: `bytes` sent to method `method % 7`.
pub async fn server_case(
    channel: tonic::transport::Channel,
    method: u8,
    bytes: Vec<u8>,
) -> Result<(), String> {
    let path = SERVER_METHODS[usize::from(method) % SERVER_METHODS.len()];
    let outcome = tokio::time::timeout(CASE_TIMEOUT, raw_call(channel.clone(), path, bytes))
        .await
        .map_err(|_| format!("{path} did not answer within {CASE_TIMEOUT:?}"))?;
    if let Err(status) = &outcome {
        documented(path, status)?;
    }
    raw_call(
        channel,
        "/xenoserve.server.v1.XenoServer/ListSessions",
        Vec::new(),
    )
    .await
    .map_err(|status| format!("after {path}, ListSessions failed: {status}"))
}

/// Runs `cases` proptest cases of [`task_manager_case`] against `manager` (with domains
/// `d-0` and `d-1` created first, so cases meet live domains too); panics naming the first
/// broken promise and the case that broke it (shrunk).
pub fn task_manager_properties(manager: DynTaskManager, env_type: &str, cases: u32) {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        for id in ["d-0", "d-1"] {
            manager
                .create_domain(Request::new(pb::CreateDomainRequest {
                    domain_id: id.to_owned(),
                    env_type: env_type.to_owned(),
                    limits: Some(pb::DomainLimits {
                        cpu_msps: 200,
                        memory_mb: 16,
                        output_bytes_max: 4096,
                        tasks_max: 4,
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
                .await
                .expect("a domain for the cases");
        }
    });
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    });
    let strategy = (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..512));
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<(&str, String), u32>::new());
    let result = runner.run(&strategy, |(method, bytes)| {
        let outcome = runtime.block_on(task_manager_case(&manager, env_type, method, &bytes));
        prop_assert!(
            outcome.is_ok(),
            "{}",
            outcome.as_ref().err().cloned().unwrap_or_default()
        );
        if let (Ok((name, code)), Ok(mut seen)) = (outcome, seen.lock()) {
            *seen.entry((name, format!("{code:?}"))).or_default() += 1;
        }
        Ok(())
    });
    let seen = seen.into_inner().unwrap_or_default();
    println!("{env_type} task manager, {cases} arbitrary requests: {seen:?}");
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // The cases must have reached the methods' insides, not only their first check.
    let deployed = seen
        .iter()
        .filter(|((name, code), _)| *name == "DeployTask" && code != "NotFound")
        .map(|(_, count)| count)
        .sum::<u32>();
    assert!(
        deployed > 0,
        "no arbitrary DeployTask got past the domain lookup: {seen:?}"
    );
}
