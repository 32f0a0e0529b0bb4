//! Sessions on a XenoServer: `xeno session create|list`, `deploy`, `logs`, `status`, `destroy`,
//! `charges`, and `xeno server status`. The profile remembers which server each session is on,
//! so later commands need only the session id.

use crate::order::corp;
use crate::profile::Profile;
use crate::refusal::{Refused, from_status};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use xeno_clients::transport::{Peer, Proved};
use xeno_schemas::Document;
use xeno_schemas::documents::{
    EnvironmentalRequirements, PurchaseOrder, TaskDescription, format_minor,
};
use xeno_schemas::identity::Role;
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::server::v1::xeno_server_client::XenoServerClient;

const SESSIONS_FILE: &str = "sessions.toml";
/// Largest document or payload file read by the client, bytes.
const FILE_BYTES_MAX: u64 = 256 << 20;

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Create a session from requirements and a signed purchase order.
    Create {
        /// The EnvironmentalRequirements document.
        #[arg(short = 'f', long = "requirements")]
        requirements: PathBuf,
        /// The purchase order, signed (`xeno order restrict`).
        #[arg(long)]
        order: PathBuf,
        /// The XenoServer, as ID@HOST:PORT (`xeno find` prints it so); the id is the
        /// fingerprint of its key, which the connection checks. Just HOST:PORT when the order
        /// is restricted to one server: its id is taken from there.
        #[arg(long)]
        server: ServerTarget,
    },
    /// Your sessions on a server.
    List {
        /// The XenoServer, ID@HOST:PORT.
        #[arg(long)]
        server: ServerTarget,
    },
}

/// `xeno deploy`.
#[derive(Args)]
pub struct DeployArgs {
    /// The session.
    session: String,
    /// The TaskDescription document.
    task: PathBuf,
    /// Files the task names by hash (its program and its files); repeat for each.
    #[arg(long = "payload")]
    payloads: Vec<PathBuf>,
}

/// `xeno logs`.
#[derive(Args)]
pub struct LogsArgs {
    /// The session.
    session: String,
    /// Keep following until the session ends.
    #[arg(short, long)]
    follow: bool,
    /// Only this task's output.
    #[arg(long)]
    task: Option<String>,
}

fn sessions_file(profile: &Profile) -> PathBuf {
    profile.dir.join(SESSIONS_FILE)
}

/// A XenoServer as a client names it: where it listens and, to be sure it is the one chosen,
/// its id (the SHA-256 fingerprint of its key, which its certificate must prove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// The server id, if given.
    pub id: Option<String>,
    /// host:port.
    pub endpoint: String,
}

impl std::str::FromStr for ServerTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (id, endpoint) = match text.split_once('@') {
            Some((id, endpoint)) => (Some(id), endpoint),
            None => (None, text),
        };
        if let Some(id) = id
            && !(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "{id:?} is not a server id (64 hexadecimal digits, as `xeno find` prints)"
            ));
        }
        if endpoint.is_empty() {
            return Err("the server's HOST:PORT is missing".to_owned());
        }
        Ok(ServerTarget {
            id: id.map(str::to_ascii_lowercase),
            endpoint: endpoint.to_owned(),
        })
    }
}

impl std::fmt::Display for ServerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{id}@{}", self.endpoint),
            None => f.write_str(&self.endpoint),
        }
    }
}

impl ServerTarget {
    /// The peer a connection must reach: this server by its id.
    fn peer(&self) -> Result<Peer> {
        match &self.id {
            Some(id) => Ok(Peer::Server(id.clone())),
            None => Err(anyhow::Error::new(Refused(format!(
                "name the server by its id as well as its address: ID@{} (`xeno find` and `xeno server status` print it)",
                self.endpoint
            )))),
        }
    }
}

fn remembered(profile: &Profile) -> BTreeMap<String, String> {
    std::fs::read_to_string(sessions_file(profile))
        .ok()
        .and_then(|text| toml::from_str(&text).ok())
        .unwrap_or_default()
}

fn remember(profile: &Profile, session: &str, server: &ServerTarget) -> Result<()> {
    let mut sessions = remembered(profile);
    sessions.insert(session.to_owned(), server.to_string());
    std::fs::write(sessions_file(profile), toml::to_string(&sessions)?)
        .context("recording the session in the profile")
}

/// The server a session is on.
fn server_of(profile: &Profile, session: &str) -> Result<ServerTarget> {
    let recorded = remembered(profile).remove(session).ok_or_else(|| {
        anyhow::Error::new(Refused(format!(
            "session {session} is not in this profile (created elsewhere?)"
        )))
    })?;
    recorded.parse().map_err(|error| {
        anyhow::anyhow!("the profile's record of session {session} ({recorded:?}): {error}")
    })
}

/// An mTLS connection to the server `peer` at `endpoint`; its certificate is issued by our
/// corp, so our corp's CA is the trust anchor, and it must prove to be that server.
async fn connect_server(
    profile: &Profile,
    endpoint: &str,
    peer: &Peer,
) -> Result<(XenoServerClient<Channel>, Proved)> {
    let (channel, proved) = xeno_clients::transport::connect_proved(
        endpoint,
        &profile.corp_ca_pem,
        Some(&profile.credentials),
        peer,
    )
    .await?;
    let client = XenoServerClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(FILE_BYTES_MAX as usize + (1 << 20));
    Ok((client, proved))
}

/// An mTLS connection to the server `target` names, which must prove its id.
pub async fn server(profile: &Profile, target: &ServerTarget) -> Result<XenoServerClient<Channel>> {
    Ok(connect_server(profile, &target.endpoint, &target.peer()?)
        .await?
        .0)
}

/// `target` with its id, taken from the order when the order may be spent on one server only.
fn with_order_server(target: ServerTarget, order: &PurchaseOrder) -> Result<ServerTarget> {
    if target.id.is_some() {
        return Ok(target);
    }
    let named = [
        Some(&order.issued.restrictions),
        order.client_restrictions.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|restrictions| restrictions.servers.as_ref())
    .find(|servers| servers.len() == 1)
    .and_then(|servers| servers.first().cloned());
    match named {
        Some(id) => Ok(ServerTarget {
            id: Some(id),
            ..target
        }),
        None => target.peer().map(|_| target),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    let length = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if length > FILE_BYTES_MAX {
        return Err(anyhow::Error::new(Refused(format!(
            "{} is {length} bytes; the limit is {FILE_BYTES_MAX}",
            path.display()
        ))));
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn check<T: Document>(path: &Path, bytes: &[u8]) -> Result<T> {
    T::parse(bytes)
        .map_err(|errors| anyhow::Error::new(Refused(format!("{}: {errors}", path.display()))))
}

fn money(money: Option<&common::Money>) -> String {
    money
        .map(|m| format!("{} {}", format_minor(m.amount_minor), m.currency))
        .unwrap_or_else(|| "-".to_owned())
}

pub async fn run(command: SessionCommand, profile: &Profile) -> Result<()> {
    match command {
        SessionCommand::Create {
            requirements,
            order,
            server: address,
        } => {
            let requirements_bytes = read(&requirements)?;
            check::<EnvironmentalRequirements>(&requirements, &requirements_bytes)?;
            let order_bytes = read(&order)?;
            let signed = check::<PurchaseOrder>(&order, &order_bytes)?;
            if signed.client_signature.is_none() {
                return Err(anyhow::Error::new(Refused(format!(
                    "{} is not signed yet: run `xeno order restrict` first",
                    order.display()
                ))));
            }
            let address = with_order_server(address, &signed)?;
            let response = server(profile, &address)
                .await?
                .create_session(pb::CreateSessionRequest {
                    requirements_xml: String::from_utf8(requirements_bytes)?,
                    purchase_order_xml: String::from_utf8(order_bytes)?,
                })
                .await
                .map_err(|status| from_status("session refused", status))?
                .into_inner();
            remember(profile, &response.session_id, &address)?;
            println!(
                "session {} ({} {}): {} CPUmsps, {} MB",
                response.session_id,
                response.env_type,
                if response.version.is_empty() {
                    "-"
                } else {
                    &response.version
                },
                response.cpu_msps,
                response.memory_mb
            );
        }
        SessionCommand::List { server: address } => {
            let sessions = server(profile, &address)
                .await?
                .list_sessions(pb::ListSessionsRequest {})
                .await
                .map_err(|s| from_status("list", s))?
                .into_inner();
            for session in sessions.sessions {
                println!(
                    "{}  {}  {}  tasks {}  charged {}",
                    session.session_id,
                    session.env_type,
                    session.state,
                    session.tasks,
                    money(session.charged_total.as_ref())
                );
            }
        }
    }
    Ok(())
}

/// `xeno deploy`.
pub async fn deploy(args: DeployArgs, profile: &Profile) -> Result<()> {
    let address = server_of(profile, &args.session)?;
    let task_bytes = read(&args.task)?;
    let task = check::<TaskDescription>(&args.task, &task_bytes)?;
    let mut payloads = Vec::new();
    for path in &args.payloads {
        let data = read(path)?;
        payloads.push(common::Payload {
            sha256: hex::encode(Sha256::digest(&data)),
            data,
        });
    }
    for hash in task.payload_hashes() {
        if !payloads.iter().any(|p| p.sha256 == hash) {
            return Err(anyhow::Error::new(Refused(format!(
                "{} names payload {hash}; pass the file with --payload",
                args.task.display()
            ))));
        }
    }
    let response = server(profile, &address)
        .await?
        .deploy_task(pb::DeployTaskRequest {
            session_id: args.session.clone(),
            task_xml: String::from_utf8(task_bytes)?,
            payloads,
        })
        .await
        .map_err(|status| from_status("deploy refused", status))?
        .into_inner();
    println!("task {} deployed in {}", response.task_id, args.session);
    Ok(())
}

/// `xeno logs`: task output to our stdout and stderr, events to stderr.
pub async fn logs(args: LogsArgs, profile: &Profile) -> Result<()> {
    use pb::session_event::Event;
    let address = server_of(profile, &args.session)?;
    let mut stream = server(profile, &address)
        .await?
        .watch_session(pb::WatchSessionRequest {
            session_id: args.session.clone(),
            from_offset: Default::default(),
            follow: args.follow,
        })
        .await
        .map_err(|status| from_status("watch refused", status))?
        .into_inner();
    let wanted = |task: &str| args.task.as_deref().is_none_or(|wanted| wanted == task);
    while let Some(event) = stream
        .message()
        .await
        .map_err(|status| from_status("watch", status))?
    {
        match event.event {
            Some(Event::Output(chunk)) if wanted(&chunk.task_id) => {
                if chunk.stream == common::OutputStream::Stderr as i32 {
                    std::io::stderr().write_all(&chunk.data)?;
                } else {
                    std::io::stdout().write_all(&chunk.data)?;
                    std::io::stdout().flush()?;
                }
            }
            Some(Event::TaskEnded(ended)) if wanted(&ended.task_id) => {
                let exit = ended.exit.unwrap_or_default();
                eprintln!("[{}] {}", ended.task_id, crate::display::safe(&exit.reason));
                if let Some(calls) = unknown_calls(&exit) {
                    eprintln!("[{}] {calls}", ended.task_id);
                }
            }
            Some(Event::Dropped(dropped)) if wanted(&dropped.task_id) => eprintln!(
                "[{}] {} bytes of output missing from offset {}: {}",
                dropped.task_id,
                dropped.bytes,
                dropped.offset,
                crate::display::safe(&dropped.reason)
            ),
            Some(Event::Charge(charge)) => eprintln!(
                "[charge #{}] {} (total {}, remaining {})",
                charge.sequence,
                money(charge.amount.as_ref()),
                money(charge.charged_total.as_ref()),
                money(charge.remaining.as_ref())
            ),
            Some(Event::SessionEnded(end)) => {
                eprintln!(
                    "[session ended] {} (charged {})",
                    crate::display::safe(&end.reason),
                    money(end.charged_total.as_ref())
                );
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The system calls a task made that its environment does not know, in one line
/// ("unknown system calls (ENOSYS): 41 ×3, 54 ×1"), or `None` when there were none.
fn unknown_calls(exit: &common::TaskExit) -> Option<String> {
    if exit.unknown_calls.is_empty() {
        return None;
    }
    let calls: Vec<String> = exit
        .unknown_calls
        .iter()
        .map(|call| format!("{} ×{}", call.number, call.count))
        .collect();
    Some(format!(
        "unknown system calls (ENOSYS): {}",
        calls.join(", ")
    ))
}

/// `xeno status SESSION [TASK]`.
pub async fn status(profile: &Profile, session: String, task: Option<String>) -> Result<()> {
    let address = server_of(profile, &session)?;
    let mut client = server(profile, &address).await?;
    if let Some(task) = task {
        let status = client
            .task_status(pb::TaskStatusRequest {
                session_id: session,
                task_id: task.clone(),
            })
            .await
            .map_err(|s| from_status("status", s))?
            .into_inner();
        let state =
            common::TaskState::try_from(status.state).map_or("unknown", |s| s.as_str_name());
        let usage = status.usage.unwrap_or_default();
        println!(
            "{task}: {state}; cpu {} ms, fuel {}, output {} bytes",
            usage.cpu_time_us / 1000,
            usage.fuel,
            usage.output_bytes
        );
        if status.output_dropped_bytes > 0 {
            println!(
                "  {} bytes of output not kept: {}",
                status.output_dropped_bytes,
                crate::display::safe(&status.output_dropped_reason)
            );
        }
        if let Some(exit) = status.exit {
            println!("  {}", crate::display::safe(&exit.reason));
            if let Some(calls) = unknown_calls(&exit) {
                println!("  {calls}");
            }
        }
        return Ok(());
    }
    let sessions = client
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .map_err(|s| from_status("status", s))?
        .into_inner();
    let summary = sessions
        .sessions
        .into_iter()
        .find(|s| s.session_id == session)
        .ok_or_else(|| Refused(format!("no session {session} on {address}")))?;
    println!(
        "{}  {}  {}  tasks {}  charged {}  order {}",
        summary.session_id,
        summary.env_type,
        summary.state,
        summary.tasks,
        money(summary.charged_total.as_ref()),
        summary.order_id
    );
    Ok(())
}

/// `xeno destroy SESSION`.
pub async fn destroy(profile: &Profile, session: String) -> Result<()> {
    let address = server_of(profile, &session)?;
    let response = server(profile, &address)
        .await?
        .destroy_session(pb::DestroySessionRequest {
            session_id: session.clone(),
        })
        .await
        .map_err(|s| from_status("destroy refused", s))?
        .into_inner();
    let usage = response.usage.unwrap_or_default();
    println!(
        "session {session} ended ({}): charged {}, returned {}; cpu {} ms, fuel {}, memory {} MB·s",
        crate::display::safe(&response.reason),
        money(response.charged_total.as_ref()),
        money(response.returned.as_ref()),
        usage.cpu_time_us / 1000,
        usage.fuel,
        format_minor(usage.memory_mb_ms * 1000)
    );
    Ok(())
}

/// `xeno charges SESSION`: the corp's audit trail for the order funding the session.
pub async fn charges(profile: &Profile, session: String) -> Result<()> {
    let address = server_of(profile, &session)?;
    let sessions = server(profile, &address)
        .await?
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .map_err(|s| from_status("charges", s))?
        .into_inner();
    let summary = sessions
        .sessions
        .into_iter()
        .find(|s| s.session_id == session)
        .ok_or_else(|| Refused(format!("no session {session} on {address}")))?;
    let audit = crate::order::whole_audit(&mut corp(profile).await?, &summary.order_id)
        .await
        .map_err(|s| from_status("audit", s))?;
    crate::order::print_audit(&audit);
    Ok(())
}

/// `xeno server status`: any server our corp certified when only HOST:PORT is given (the id
/// printed is the one its certificate proved), else the very server named.
pub async fn server_status(profile: &Profile, target: &ServerTarget) -> Result<()> {
    let peer = match &target.id {
        Some(id) => Peer::Server(id.clone()),
        None => Peer::AnyServer,
    };
    let (mut client, proved) = connect_server(profile, &target.endpoint, &peer).await?;
    let status = client
        .query_xeno_server_status(pb::QueryStatusRequest {})
        .await
        .map_err(|s| from_status("status", s))?
        .into_inner();
    let proved_id = match proved.party().map(|party| party.role) {
        Some(Role::Server(id)) => id,
        _ => anyhow::bail!("the connection to {} proved no server", target.endpoint),
    };
    if status.server_id != proved_id {
        return Err(anyhow::Error::new(Refused(format!(
            "the server at {} proved to be {proved_id} but says it is {}",
            target.endpoint, status.server_id
        ))));
    }
    println!(
        "server {proved_id}@{} (corps {})",
        target.endpoint,
        status.corps.join(", ")
    );
    println!(
        "  CPU {}/{} CPUmsps free, memory {}/{} MB free, network {}/{} kbps free",
        status.cpu_msps_free,
        status.cpu_msps_total,
        status.memory_mb_free,
        status.memory_mb_total,
        status.net_kbps_free,
        status.net_kbps_total
    );
    for environment in status.environments {
        println!(
            "  {} {} sessions {}{}",
            environment.env_type,
            environment.versions.join(","),
            environment.sessions,
            if environment.accepting { "" } else { " (full)" }
        );
    }
    Ok(())
}
