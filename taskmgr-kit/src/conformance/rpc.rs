//! Calls to the task manager with deadlines, and the per-check context that names domains and
//! cleans them up.

use super::events::Watch;
use super::guests::{Guest, Guests};
use super::report::Check;
use crate::DynTaskManager;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};
use xeno_schemas::proto::common::v1::{TaskExit, Usage};
use xeno_schemas::proto::taskmanager::v1 as pb;

/// Longest any single call may take before the check fails (DeployTask included: it returns
/// once the task runs).
pub(crate) const CALL_WAIT: Duration = Duration::from_secs(10);

/// Longest a short guest (hello, exit codes, flood) may take from deploy to its end.
pub(crate) const TASK_END_WAIT: Duration = Duration::from_secs(10);

/// Makes every domain id unique across checks, runs and processes sharing one task manager.
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// Fails the check with a formatted message unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}
pub(crate) use ensure;

/// Awaits a call that should succeed.
pub(crate) async fn call<T>(
    what: &str,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_WAIT, call).await {
        Err(_) => Err(format!("{what}: no answer within {CALL_WAIT:?}")),
        Ok(Err(status)) => Err(format!(
            "{what}: expected success, got {:?}: {}",
            status.code(),
            status.message()
        )),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// Awaits a call that should be refused with one of `expected`.
pub(crate) async fn refused<T>(
    what: &str,
    expected: &[Code],
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<Status, String> {
    match tokio::time::timeout(CALL_WAIT, call).await {
        Err(_) => Err(format!("{what}: no answer within {CALL_WAIT:?}")),
        Ok(Ok(_)) => Err(format!("{what}: expected {expected:?}, but it succeeded")),
        Ok(Err(status)) if expected.contains(&status.code()) => Ok(status),
        Ok(Err(status)) => Err(format!(
            "{what}: expected {expected:?}, got {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// A check's view of the task manager: its calls with deadlines, and the domains it created
/// (destroyed when the check ends, however it ends).
pub(crate) struct Ctx<'a> {
    pub tm: &'a DynTaskManager,
    pub guests: &'a dyn Guests,
    check: Check,
    created: Mutex<Vec<String>>,
}

impl<'a> Ctx<'a> {
    pub fn new(tm: &'a DynTaskManager, guests: &'a dyn Guests, check: Check) -> Ctx<'a> {
        Ctx {
            tm,
            guests,
            check,
            created: Mutex::new(Vec::new()),
        }
    }

    /// A domain id no other check or run uses.
    pub fn new_id(&self, what: &str) -> String {
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.subsec_nanos())
            .unwrap_or(0);
        format!(
            "conformance-{}-{what}-{}-{serial}-{nanos:09}",
            self.check,
            std::process::id()
        )
    }

    /// Remembers a domain to destroy when the check ends.
    pub fn remember(&self, domain: &str) {
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(domain.to_owned());
    }

    /// A CreateDomain request for the environment under test.
    pub fn create_request(
        &self,
        domain: &str,
        limits: pb::DomainLimits,
    ) -> pb::CreateDomainRequest {
        pb::CreateDomainRequest {
            domain_id: domain.to_owned(),
            env_type: self.guests.env_type().to_owned(),
            version: self.guests.version().to_owned(),
            limits: Some(limits),
            requirements_xml: String::new(),
            scratch_dir: String::new(),
        }
    }

    /// Creates a domain with the guests' limits.
    pub async fn domain(&self, what: &str) -> Result<String, String> {
        self.domain_with(what, self.guests.limits()).await
    }

    /// Creates a domain with these limits.
    pub async fn domain_with(
        &self,
        what: &str,
        limits: pb::DomainLimits,
    ) -> Result<String, String> {
        let id = self.new_id(what);
        self.create(self.create_request(&id, limits)).await?;
        Ok(id)
    }

    /// CreateDomain, remembering the domain.
    pub async fn create(
        &self,
        request: pb::CreateDomainRequest,
    ) -> Result<pb::CreateDomainResponse, String> {
        let domain = request.domain_id.clone();
        let response = call("CreateDomain", self.tm.create_domain(Request::new(request))).await?;
        self.remember(&domain);
        Ok(response)
    }

    /// DeployTask of a guest.
    pub async fn deploy(&self, domain: &str, task: &str, guest: &Guest) -> Result<(), String> {
        call(
            &format!("DeployTask {task}"),
            self.tm
                .deploy_task(Request::new(deploy_request(domain, task, guest))),
        )
        .await
        .map(|_| ())
    }

    /// StreamOutput.
    pub async fn watch(
        &self,
        domain: &str,
        from_offset: HashMap<String, u64>,
        follow: bool,
    ) -> Result<Watch, String> {
        let request = pb::StreamOutputRequest {
            domain_id: domain.to_owned(),
            from_offset,
            follow,
        };
        let stream = call("StreamOutput", self.tm.stream_output(Request::new(request))).await?;
        Ok(Watch::new(stream))
    }

    /// Deploys a guest with a following watch opened first, and waits for it to end.
    pub async fn run_to_end(
        &self,
        domain: &str,
        task: &str,
        guest: &Guest,
    ) -> Result<(Watch, TaskExit), String> {
        let mut watch = self.watch(domain, HashMap::new(), true).await?;
        self.deploy(domain, task, guest).await?;
        let exit = watch.until_ended(task, TASK_END_WAIT).await?;
        Ok((watch, exit))
    }

    /// ReportUsage.
    pub async fn usage(&self, domain: &str) -> Result<pb::ReportUsageResponse, String> {
        let request = pb::ReportUsageRequest {
            domain_id: domain.to_owned(),
        };
        call("ReportUsage", self.tm.report_usage(Request::new(request))).await
    }

    /// InspectTask.
    pub async fn inspect(
        &self,
        domain: &str,
        task: &str,
    ) -> Result<pb::InspectTaskResponse, String> {
        let request = pb::InspectTaskRequest {
            domain_id: domain.to_owned(),
            task_id: task.to_owned(),
        };
        call(
            &format!("InspectTask {task}"),
            self.tm.inspect_task(Request::new(request)),
        )
        .await
    }

    /// StopTask.
    pub async fn stop(&self, domain: &str, task: &str, reason: &str) -> Result<(), String> {
        call(
            &format!("StopTask {task}"),
            self.tm
                .stop_task(Request::new(stop_request(domain, task, reason))),
        )
        .await
        .map(|_| ())
    }

    /// DestroyDomain; returns the final usage.
    pub async fn destroy(&self, domain: &str, reason: &str) -> Result<Usage, String> {
        let request = pb::DestroyDomainRequest {
            domain_id: domain.to_owned(),
            reason: reason.to_owned(),
        };
        let response = call(
            "DestroyDomain",
            self.tm.destroy_domain(Request::new(request)),
        )
        .await?;
        response
            .usage
            .ok_or_else(|| "DestroyDomain: expected the final usage, got none".to_owned())
    }

    /// Destroys every domain the check created (errors are ignored: a check may have destroyed
    /// some already, and a failing task manager must not hang the suite).
    pub async fn clean_up(&self) {
        let domains = std::mem::take(
            &mut *self
                .created
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for domain in domains {
            let _ = self.destroy(&domain, "conformance check finished").await;
        }
    }
}

/// A DeployTask request for a guest.
pub(crate) fn deploy_request(domain: &str, task: &str, guest: &Guest) -> pb::DeployTaskRequest {
    pb::DeployTaskRequest {
        domain_id: domain.to_owned(),
        task_id: task.to_owned(),
        task_xml: guest.task_xml.clone(),
        payloads: guest.payloads.clone(),
    }
}

/// A StopTask request.
pub(crate) fn stop_request(domain: &str, task: &str, reason: &str) -> pb::StopTaskRequest {
    pb::StopTaskRequest {
        domain_id: domain.to_owned(),
        task_id: task.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The usage fields that must never decrease, by name.
pub(crate) fn usage_fields(usage: &Usage) -> [(&'static str, u64); 9] {
    [
        ("cpu_time_us", usage.cpu_time_us),
        ("memory_mb_ms", usage.memory_mb_ms),
        ("memory_peak_bytes", usage.memory_peak_bytes),
        ("net_rx_bytes", usage.net_rx_bytes),
        ("net_tx_bytes", usage.net_tx_bytes),
        ("fuel", usage.fuel),
        ("syscalls", usage.syscalls),
        ("output_bytes", usage.output_bytes),
        ("wall_time_ms", usage.wall_time_ms),
    ]
}

/// Fails unless every field of `later` is at least that of `earlier`.
pub(crate) fn never_decreases(what: &str, earlier: &Usage, later: &Usage) -> Result<(), String> {
    for ((name, before), (_, after)) in usage_fields(earlier).into_iter().zip(usage_fields(later)) {
        ensure!(
            after >= before,
            "{what}: usage must never decrease, but {name} went from {before} to {after}"
        );
    }
    Ok(())
}
