//! Capabilities, creating domains, and unknown ids.

use super::{CheckOutcome, passed};
use crate::conformance::rpc::{Ctx, call, deploy_request, ensure, refused, stop_request};
use std::collections::HashMap;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use xeno_schemas::proto::taskmanager::v1 as pb;

/// A version no task manager offers.
const NO_SUCH_VERSION: &str = "conformance-no-such-version";

/// An env type no task manager serves.
const NO_SUCH_ENV_TYPE: &str = "ConformanceNoSuchEnv";

/// How long a refused StreamOutput may take to deliver its error as the stream's first item.
const STREAM_ERROR_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn capabilities(ctx: &Ctx<'_>) -> CheckOutcome {
    let caps = call(
        "GetCapabilities",
        ctx.tm
            .get_capabilities(Request::new(pb::GetCapabilitiesRequest {})),
    )
    .await?;
    let env_type = ctx.guests.env_type();
    ensure!(
        !caps.name.is_empty(),
        "GetCapabilities: expected a plugin name, got an empty one"
    );
    ensure!(
        caps.env_types.iter().any(|served| served == env_type),
        "GetCapabilities: expected env_types to list {env_type:?}, got {:?}",
        caps.env_types
    );
    ensure!(
        !caps.versions.is_empty(),
        "GetCapabilities: expected at least one version, got none"
    );
    let version = ctx.guests.version();
    ensure!(
        version.is_empty() || caps.versions.iter().any(|offered| offered == version),
        "GetCapabilities: expected versions to list {version:?}, got {:?}",
        caps.versions
    );
    ensure!(
        !caps.program_kinds.is_empty(),
        "GetCapabilities: expected at least one program kind, got none"
    );
    ensure!(
        caps.domains_max >= 1,
        "GetCapabilities: expected domains_max of at least 1, got 0"
    );
    passed()
}

pub(super) async fn create_domain_idempotent(ctx: &Ctx<'_>) -> CheckOutcome {
    let id = ctx.new_id("twice");
    let request = ctx.create_request(&id, ctx.guests.limits());
    let first = ctx.create(request.clone()).await?;
    ensure!(
        !first.version.is_empty(),
        "CreateDomain: expected the version the domain presents, got an empty one"
    );
    let asked = ctx.guests.version();
    ensure!(
        asked.is_empty() || first.version == asked,
        "CreateDomain asked for version {asked:?}: expected the domain to present it, got {:?}",
        first.version
    );
    let again = call(
        "CreateDomain retried identically",
        ctx.tm.create_domain(Request::new(request.clone())),
    )
    .await?;
    ensure!(
        again == first,
        "CreateDomain retried identically: expected the first answer {first:?}, got {again:?}"
    );
    let mut different = request;
    if let Some(limits) = different.limits.as_mut() {
        limits.memory_mb += 1;
    }
    refused(
        "CreateDomain with the same id and different limits",
        &[Code::AlreadyExists],
        ctx.tm.create_domain(Request::new(different)),
    )
    .await?;
    passed()
}

pub(super) async fn create_domain_refusals(ctx: &Ctx<'_>) -> CheckOutcome {
    let id = ctx.new_id("version");
    // Remembered first: a task manager that wrongly accepts must still have it cleaned up.
    ctx.remember(&id);
    let mut request = ctx.create_request(&id, ctx.guests.limits());
    request.version = NO_SUCH_VERSION.into();
    refused(
        "CreateDomain with a version not offered",
        &[Code::Unimplemented],
        ctx.tm.create_domain(Request::new(request)),
    )
    .await?;
    let id = ctx.new_id("envtype");
    ctx.remember(&id);
    let mut request = ctx.create_request(&id, ctx.guests.limits());
    request.env_type = NO_SUCH_ENV_TYPE.into();
    request.version = String::new();
    refused(
        "CreateDomain with an env type not served",
        &[Code::Unimplemented, Code::InvalidArgument],
        ctx.tm.create_domain(Request::new(request)),
    )
    .await?;
    passed()
}

pub(super) async fn unknown_ids_not_found(ctx: &Ctx<'_>) -> CheckOutcome {
    let missing = ctx.new_id("never-created");
    let not_found = &[Code::NotFound];
    let tm = ctx.tm;
    let guest = ctx.guests.hello();
    refused(
        "DeployTask to an unknown domain",
        not_found,
        tm.deploy_task(Request::new(deploy_request(&missing, "t", &guest))),
    )
    .await?;
    refused(
        "ReportUsage of an unknown domain",
        not_found,
        tm.report_usage(Request::new(pb::ReportUsageRequest {
            domain_id: missing.clone(),
        })),
    )
    .await?;
    refused(
        "StopTask in an unknown domain",
        not_found,
        tm.stop_task(Request::new(stop_request(&missing, "t", "conformance"))),
    )
    .await?;
    refused(
        "InspectTask in an unknown domain",
        not_found,
        tm.inspect_task(Request::new(pb::InspectTaskRequest {
            domain_id: missing.clone(),
            task_id: "t".into(),
        })),
    )
    .await?;
    refused(
        "DestroyDomain of an unknown domain",
        not_found,
        tm.destroy_domain(Request::new(pb::DestroyDomainRequest {
            domain_id: missing.clone(),
            reason: "conformance".into(),
        })),
    )
    .await?;
    stream_not_found(ctx, &missing).await?;

    let domain = ctx.domain("known").await?;
    refused(
        "StopTask of an unknown task",
        not_found,
        tm.stop_task(Request::new(stop_request(
            &domain,
            "no-such-task",
            "conformance",
        ))),
    )
    .await?;
    refused(
        "InspectTask of an unknown task",
        not_found,
        tm.inspect_task(Request::new(pb::InspectTaskRequest {
            domain_id: domain,
            task_id: "no-such-task".into(),
        })),
    )
    .await?;
    passed()
}

/// StreamOutput of an unknown domain is NOT_FOUND, either as the call's answer or as the
/// stream's first item (gRPC servers may report a streaming call's error either way).
async fn stream_not_found(ctx: &Ctx<'_>, missing: &str) -> Result<(), String> {
    let what = "StreamOutput of an unknown domain";
    let request = pb::StreamOutputRequest {
        domain_id: missing.to_owned(),
        from_offset: HashMap::new(),
        follow: false,
    };
    let answer = tokio::time::timeout(
        crate::conformance::rpc::CALL_WAIT,
        ctx.tm.stream_output(Request::new(request)),
    )
    .await
    .map_err(|_| format!("{what}: no answer"))?;
    let status = match answer {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(STREAM_ERROR_WAIT, stream.next()).await {
                Ok(Some(Err(status))) => status,
                Ok(Some(Ok(event))) => {
                    return Err(format!(
                        "{what}: expected NotFound, got an event: {event:?}"
                    ));
                }
                Ok(None) => return Err(format!("{what}: expected NotFound, got an empty stream")),
                Err(_) => {
                    return Err(format!(
                        "{what}: expected NotFound, got a stream that stayed silent"
                    ));
                }
            }
        }
    };
    ensure!(
        status.code() == Code::NotFound,
        "{what}: expected NotFound, got {:?}: {}",
        status.code(),
        status.message()
    );
    Ok(())
}
