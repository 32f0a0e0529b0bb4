//! The suite's checks by name, and what running them found.

use std::fmt;
use std::time::Duration;

/// One check of the suite. [`Check::ALL`] lists them in the order [`run_suite`](super::run_suite)
/// runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// GetCapabilities lists the env type (and the version asked for), program kinds, a name.
    Capabilities,
    /// CreateDomain retried identically returns the first answer; the same id with a
    /// different request is ALREADY_EXISTS.
    CreateDomainIdempotent,
    /// CreateDomain refuses an unknown version (UNIMPLEMENTED) and env type.
    CreateDomainRefusals,
    /// Every call naming an unknown domain or task is NOT_FOUND.
    UnknownIdsNotFound,
    /// hello's stdout is exactly `hello\n` from offset 0, live through StreamOutput, then it
    /// ends EXITED 0, and InspectTask and ReportUsage agree.
    HelloOutput,
    /// DeployTask retried identically is accepted without running the task again; the same id
    /// with a different task is ALREADY_EXISTS.
    DeployTaskIdempotent,
    /// Exit statuses 0, 1, 42 and 255 come back as EXITED with that code.
    ExitCodes,
    /// Arguments and environment variables reach the task unchanged.
    ArgsAndEnv,
    /// stderr comes as stderr chunks, separate from stdout.
    StderrSeparate,
    /// Output beyond the domain's cap is counted in usage but not kept; what is kept is
    /// consistent with its offsets.
    OutputCap,
    /// A task's working directory is the scratch directory given to CreateDomain.
    WriteFile,
    /// StreamOutput with follow false replays what was recorded, then ends.
    ReplayEnds,
    /// StreamOutput with follow true delivers live events, stays open, and ends with
    /// DomainDestroyed when the domain is destroyed.
    FollowLive,
    /// StreamOutput from an offset skips the output before it.
    ResumeFromOffset,
    /// StopTask ends a spinning task promptly, STOPPED with the reason given.
    StopTask,
    /// DestroyDomain stops running tasks, returns final usage no lower than the last report,
    /// returns the same usage again, and refuses DeployTask afterwards.
    DestroyDomain,
    /// Two domains do not see each other: each stream and usage report has only its own tasks,
    /// another domain's task is NOT_FOUND, and destroying one leaves the other working.
    DomainsIndependent,
    /// Usage never decreases between reports, and CPU time grows while a task spins.
    UsageGrows,
    /// A domain's CPU rate (cpu_msps) is enforced, roughly.
    CpuRate,
}

impl Check {
    /// Every check, in the order the suite runs them.
    pub const ALL: [Check; 19] = [
        Check::Capabilities,
        Check::CreateDomainIdempotent,
        Check::CreateDomainRefusals,
        Check::UnknownIdsNotFound,
        Check::HelloOutput,
        Check::DeployTaskIdempotent,
        Check::ExitCodes,
        Check::ArgsAndEnv,
        Check::StderrSeparate,
        Check::OutputCap,
        Check::WriteFile,
        Check::ReplayEnds,
        Check::FollowLive,
        Check::ResumeFromOffset,
        Check::StopTask,
        Check::DestroyDomain,
        Check::DomainsIndependent,
        Check::UsageGrows,
        Check::CpuRate,
    ];

    /// The check's name, as reports show it (also used in its domain ids).
    pub fn name(self) -> &'static str {
        match self {
            Check::Capabilities => "capabilities",
            Check::CreateDomainIdempotent => "create_domain_idempotent",
            Check::CreateDomainRefusals => "create_domain_refusals",
            Check::UnknownIdsNotFound => "unknown_ids_not_found",
            Check::HelloOutput => "hello_output",
            Check::DeployTaskIdempotent => "deploy_task_idempotent",
            Check::ExitCodes => "exit_codes",
            Check::ArgsAndEnv => "args_and_env",
            Check::StderrSeparate => "stderr_separate",
            Check::OutputCap => "output_cap",
            Check::WriteFile => "write_file",
            Check::ReplayEnds => "replay_ends",
            Check::FollowLive => "follow_live",
            Check::ResumeFromOffset => "resume_from_offset",
            Check::StopTask => "stop_task",
            Check::DestroyDomain => "destroy_domain",
            Check::DomainsIndependent => "domains_independent",
            Check::UsageGrows => "usage_grows",
            Check::CpuRate => "cpu_rate",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a check that did not fail went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed; the note says what was measured, where that is of interest.
    Passed(Option<String>),
    /// It was not run, and why (a guest the environment does not provide).
    Skipped(String),
}

/// A check that failed: what was expected and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conformance check {check} failed: {message}")]
pub struct Failure {
    /// Which check.
    pub check: Check,
    /// What was expected and what happened instead.
    pub message: String,
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Which check.
    pub check: Check,
    /// How long it took.
    pub elapsed: Duration,
    /// Passed or skipped, or the failure.
    pub outcome: Result<Outcome, Failure>,
}

/// What a run of the suite found, check by check.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Each check run, in order.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// The failures.
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.results
            .iter()
            .filter_map(|result| result.outcome.as_ref().err())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for result in &self.results {
            let millis = result.elapsed.as_millis();
            match &result.outcome {
                Ok(Outcome::Passed(None)) => writeln!(f, "ok    {} ({millis} ms)", result.check)?,
                Ok(Outcome::Passed(Some(note))) => {
                    writeln!(f, "ok    {} ({millis} ms): {note}", result.check)?
                }
                Ok(Outcome::Skipped(why)) => writeln!(f, "skip  {}: {why}", result.check)?,
                Err(failure) => writeln!(
                    f,
                    "FAIL  {} ({millis} ms): {}",
                    result.check, failure.message
                )?,
            }
        }
        let failed = self.failures().count();
        let skipped = self
            .results
            .iter()
            .filter(|result| matches!(result.outcome, Ok(Outcome::Skipped(_))))
            .count();
        let passed = self.results.len() - failed - skipped;
        write!(
            f,
            "conformance summary: {passed} checks passed, {skipped} skipped, {failed} failed"
        )
    }
}

/// The suite failed: at least one check did. Shows the whole report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the task manager failed the conformance suite:\n{report}")]
pub struct SuiteFailed {
    /// Every check's result, passed ones included.
    pub report: Report,
}
