//! The checks, grouped by what they exercise.

mod control;
mod lifecycle;
mod metering;
mod output;
mod streaming;

use super::report::{Check, Outcome};
use super::rpc::Ctx;

/// What a check returns: passed (with a note), skipped, or what went wrong.
pub(crate) type CheckOutcome = Result<Outcome, String>;

/// Runs one check's body (the caller cleans up its domains).
pub(crate) async fn run(ctx: &Ctx<'_>, check: Check) -> CheckOutcome {
    match check {
        Check::Capabilities => lifecycle::capabilities(ctx).await,
        Check::CreateDomainIdempotent => lifecycle::create_domain_idempotent(ctx).await,
        Check::CreateDomainRefusals => lifecycle::create_domain_refusals(ctx).await,
        Check::UnknownIdsNotFound => lifecycle::unknown_ids_not_found(ctx).await,
        Check::HelloOutput => output::hello_output(ctx).await,
        Check::DeployTaskIdempotent => output::deploy_task_idempotent(ctx).await,
        Check::ExitCodes => output::exit_codes(ctx).await,
        Check::ArgsAndEnv => output::args_and_env(ctx).await,
        Check::StderrSeparate => output::stderr_separate(ctx).await,
        Check::OutputCap => output::output_cap(ctx).await,
        Check::WriteFile => output::write_file(ctx).await,
        Check::ReplayEnds => streaming::replay_ends(ctx).await,
        Check::FollowLive => streaming::follow_live(ctx).await,
        Check::ResumeFromOffset => streaming::resume_from_offset(ctx).await,
        Check::StopTask => control::stop_task(ctx).await,
        Check::DestroyDomain => control::destroy_domain(ctx).await,
        Check::DomainsIndependent => control::domains_independent(ctx).await,
        Check::UsageGrows => metering::usage_grows(ctx).await,
        Check::CpuRate => metering::cpu_rate(ctx).await,
    }
}

/// A pass with nothing to note.
pub(crate) fn passed() -> CheckOutcome {
    Ok(Outcome::Passed(None))
}
