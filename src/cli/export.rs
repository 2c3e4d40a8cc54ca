//! `export`: flags and config file merged into validated settings, the export run until done
//! or signalled, and its outcome turned into messages and an exit code.

use crate::dataset::delta::TableFormat;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::args::{ApiArgs, ExportArgs, PrivacyArgs, Tuning};
use super::{Ui, report_error, reporter, summary, usage_error};
use crate::api::{self, ApiError, TransportKind};
use crate::config::{self, ConfigFile, ExportConfig, ExportInputs};
use crate::exit;
use crate::extract::state::StateError;
use crate::extract::{ExtractError, StopReason, Stopper};
use crate::pipeline::{self, ExportError, ExportSummary};
use crate::privacy::{HASH_KEY_ENV, PolicyRules};
use crate::progress::Reporter;

/// Settings from flags, then the config file, then defaults.
pub(super) fn export_inputs(
    tuning: &Tuning,
    file: &ConfigFile,
    out: Option<PathBuf>,
) -> ExportInputs {
    ExportInputs {
        out: out
            .or_else(|| file.out.clone())
            .unwrap_or_else(|| config::DEFAULT_OUT.into()),
        page_size: tuning
            .page_size
            .or(file.page_size)
            .unwrap_or(config::DEFAULT_PAGE_SIZE),
        concurrency: tuning
            .concurrency
            .or(file.concurrency)
            .unwrap_or(config::DEFAULT_CONCURRENCY),
        request_timeout: tuning
            .request_timeout
            .or(file.request_timeout)
            .unwrap_or(api::DEFAULT_REQUEST_TIMEOUT),
        max_retries: tuning
            .max_retries
            .or(file.max_retries)
            .unwrap_or(api::retry::DEFAULT_MAX_RETRIES),
        max_rps: tuning.max_rps.or(file.max_rps),
        max_response_bytes: tuning.max_response_size.or(file.max_response_size),
        retry_delay: tuning.retry_delay.or(file.retry_delay),
        lookback: file.lookback.unwrap_or(config::DEFAULT_LOOKBACK),
        unfinished_horizon: file
            .unfinished_horizon
            .unwrap_or(config::DEFAULT_UNFINISHED_HORIZON),
        ..ExportInputs::default()
    }
}

/// The inputs shared by `export` and `verify`: the config file, then flags over it; or the exit
/// code of a bad config file.
pub(super) fn api_inputs(
    api: ApiArgs,
    tuning: &Tuning,
    out: Option<PathBuf>,
) -> Result<(ExportInputs, ConfigFile), i32> {
    let file = match api.config.as_deref().map(ConfigFile::load).transpose() {
        Ok(file) => file.unwrap_or_default(),
        Err(e) => return Err(usage_error(&e)),
    };
    // A selection on the command line replaces the file's.
    let cli_selects =
        !api.workflows.is_empty() || api.workflows_file.is_some() || api.all_workflows;
    let (workflows, workflows_file, all_workflows) = if cli_selects {
        (api.workflows, api.workflows_file, api.all_workflows)
    } else {
        (
            file.workflows.clone().unwrap_or_default(),
            file.workflows_file.clone(),
            file.all_workflows.unwrap_or(false),
        )
    };
    let base = export_inputs(tuning, &file, out);
    let inputs = ExportInputs {
        base_url: api
            .base_url
            .or_else(|| file.base_url.clone())
            .unwrap_or_else(|| api::DEFAULT_BASE_URL.to_owned()),
        api_key_file: api.api_key_file.or_else(|| file.api_key_file.clone()),
        api_key_env: std::env::var(config::API_KEY_ENV).ok(),
        workflows,
        workflows_file,
        all_workflows,
        shard: api.shard.or(file.shard),
        ..base
    };
    Ok((inputs, file))
}

pub(super) async fn run_export(args: ExportArgs, ui: Ui) -> i32 {
    let (inputs, file) = match api_inputs(args.api, &args.tuning, args.out) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let inputs = ExportInputs {
        full: args.full,
        with_steps: args.with_steps || file.with_steps.unwrap_or(false),
        lookback: args.lookback.unwrap_or(inputs.lookback),
        unfinished_horizon: args.unfinished_horizon.unwrap_or(inputs.unfinished_horizon),
        keep_manifests: args.keep_manifests.or(file.keep_manifests),
        table_format: args
            .table_format
            .as_deref()
            .and_then(TableFormat::parse)
            .or(file.table_format)
            .unwrap_or_default(),
        since: args.since,
        ..privacy_inputs(args.privacy, &file, inputs)
    };
    let config = match inputs.validate() {
        Ok(config) => config,
        Err(e) => return usage_error(&e),
    };
    if args.dry_run {
        return dry_run(&config).await;
    }
    let out = config.out.clone();
    finish_export(
        export_until_signalled(config, ui, args.deadline).await,
        &out,
        ui,
    )
}

/// `[privacy]` with the flags over it: each flag given replaces the file's key.
pub(super) fn privacy_inputs(
    flags: PrivacyArgs,
    file: &ConfigFile,
    inputs: ExportInputs,
) -> ExportInputs {
    let from_file = file.privacy.clone().unwrap_or_default();
    let patterns = from_file.patterns();
    let pick = |flag: Vec<String>, file: Option<Vec<String>>| {
        if flag.is_empty() {
            file.unwrap_or_default()
        } else {
            flag
        }
    };
    ExportInputs {
        privacy: PolicyRules {
            mask: pick(flags.mask, from_file.mask),
            hash: pick(flags.hash, from_file.hash),
            drop: pick(flags.drop, from_file.drop),
            patterns,
        },
        hash_key_file: flags.hash_key_file.or(from_file.hash_key_file),
        hash_key_env: std::env::var(HASH_KEY_ENV).ok(),
        ..inputs
    }
}

/// `--dry-run`: prints the plan (stdout) or why there is none; exit 0 when there is one.
async fn dry_run(config: &ExportConfig) -> i32 {
    match pipeline::plan(config).await {
        Ok(plan) => {
            say_raw!("{}", summary::render_plan(&plan, config));
            exit::SUCCESS
        }
        Err(e) => {
            let (code, hint) = failure_code(&e);
            report_failure(&e, code, hint.as_deref());
            code
        }
    }
}

/// Runs an export; the first SIGINT/SIGTERM stops fetching and commits what was fetched, a
/// second one exits at once (uncommitted files are hidden temp files readers never see).
pub(super) async fn export_until_signalled(
    config: ExportConfig,
    ui: Ui,
    deadline: Option<Duration>,
) -> Result<ExportSummary, ExportError> {
    let stopper = Stopper::default();
    let reporter = reporter(ui);
    let watcher = stop_on_signals(
        &stopper,
        "interrupted: committing what was fetched (interrupt again to quit at once)",
        reporter.clone(),
    );
    // The deadline stops fetching as an interrupt does, for its own reason.
    let timer = deadline.map(|after| {
        let stopper = stopper.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::warn!(target: "extract", "the deadline was reached: committing what was fetched");
            stopper.stop(StopReason::Deadline);
        })
    });
    let result = pipeline::export(config, reporter.clone(), stopper).await;
    reporter.on_done();
    watcher.abort();
    if let Some(timer) = timer {
        timer.abort();
    }
    result
}

/// The first SIGINT/SIGTERM shows `message` and stops `stopper`; a second one exits at once.
/// Abort the handle when the command is done.
pub(super) fn stop_on_signals(
    stopper: &Stopper,
    message: &'static str,
    reporter: Arc<dyn Reporter>,
) -> tokio::task::JoinHandle<()> {
    let stopper = stopper.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        // Through the reporter: above the progress bars, not under their next frame.
        reporter.note(message);
        stopper.stop(StopReason::Interrupted);
        shutdown_signal().await;
        std::process::exit(exit::INTERRUPTED);
    })
}

pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints the summary or the error, and picks the exit code.
pub(super) fn finish_export(
    result: Result<ExportSummary, ExportError>,
    out: &std::path::Path,
    ui: Ui,
) -> i32 {
    match result {
        Ok(summary) => {
            report_workflow_errors(&summary);
            if !ui.quiet {
                say_raw!("{}", summary::render(&summary, out));
            }
            exit_code(&summary)
        }
        Err(e) => {
            let (code, hint) = failure_code(&e);
            report_failure(&e, code, hint.as_deref());
            code
        }
    }
}

/// One `error:` line per workflow that failed on its own, a hint for ids the API does not know,
/// and one line for the workflows an interrupt, the deadline or a rejected key stopped.
pub(super) fn report_workflow_errors(summary: &ExportSummary) {
    let mut unknown = 0;
    for failed in summary.errors() {
        let error = failed.error.as_ref().expect("errors() yields errors");
        let id = &failed.workflow_id;
        let name = summary.name_of(id);
        let shown = if name == id {
            format!("`{id}`")
        } else {
            format!("`{name}` (`{id}`)")
        };
        shout!(
            "error: workflow {shown} failed: {}",
            crate::error_chain(error)
        );
        unknown += usize::from(matches!(
            error.api_error(),
            Some(ApiError::Status { status: 404, .. })
        ));
    }
    if unknown > 0 {
        let which = if unknown == 1 {
            "this workflow: check the id"
        } else {
            "these workflows: check the ids"
        };
        let mut hint = format!("hint: the API does not know {which}");
        if !summary.listed {
            hint.push_str("; `--all-workflows` exports every workflow the key can read");
        }
        if unknown == summary.workflows.len() {
            hint.push_str(", and `--base-url` usually ends in `/api/v1/workflow`");
        }
        shout!("{hint}");
    }
    if let Some(stopped) = summary.stopped() {
        let left = stopped.partway + stopped.not_started;
        shout!(
            "{}: {left} of {} workflows not finished ({} stopped partway, {} not started); what was fetched is committed, and the next export continues them",
            match stopped.reason {
                StopReason::Interrupted => "interrupted".to_owned(),
                reason => format!("error: stopped: {reason}"),
            },
            summary.workflows.len(),
            stopped.partway,
            stopped.not_started,
        );
    }
}

/// Prints why a command failed as a whole: one line naming the path or URL (like the
/// per-workflow failures) for bad input and unreachable places, else the error with its causes.
pub(super) fn report_failure(e: &dyn std::error::Error, code: i32, hint: Option<&str>) {
    if [
        exit::USAGE,
        exit::OUTPUT,
        exit::UNREACHABLE,
        exit::DNS,
        exit::TLS,
    ]
    .contains(&code)
    {
        shout!("error: {}", crate::error_chain(e));
        if let Some(hint) = hint {
            shout!("hint: {hint}");
        }
    } else {
        report_error(e, hint);
    }
}

/// The exit code and hint of an export that failed as a whole.
pub(super) fn failure_code(e: &ExportError) -> (i32, Option<String>) {
    if let ExportError::ListWorkflows(ApiError::Status { status: 404, .. }) = e {
        return (
            exit::PARTIAL_FAILURE,
            Some(format!(
                "the workflow list is not where `--base-url` points: the base URL usually ends in `/api/v1/workflow` (the default is `{}`)",
                api::DEFAULT_BASE_URL
            )),
        );
    }
    const OUT_HINT: &str = "check that `--out` is a writable folder with free space";
    if let ExportError::Dataset(e) | ExportError::State(StateError::Dataset(e)) = e {
        let code = if e.is_lock_conflict() {
            exit::LOCKED
        } else if matches!(
            e,
            crate::dataset::DatasetError::Layout { .. }
                | crate::dataset::DatasetError::NotADataset { .. }
                | crate::dataset::DatasetError::TableFormat { .. }
        ) {
            exit::USAGE
        } else {
            exit::OUTPUT
        };
        return (code, Some(e.hint().unwrap_or_else(|| OUT_HINT.into())));
    }
    match e {
        ExportError::State(_) => (exit::OUTPUT, Some(OUT_HINT.into())),
        ExportError::WriterPanicked => (exit::INTERNAL, None),
        _ => match e.api_error() {
            Some(ApiError::Unauthorized { .. }) => (exit::AUTH, Some(AUTH_HINT.into())),
            Some(api) => unreachable(&[api])
                .map_or((exit::PARTIAL_FAILURE, None), |(code, hint)| {
                    (code, Some(hint))
                }),
            None => (exit::PARTIAL_FAILURE, None),
        },
    }
}

pub(super) const AUTH_HINT: &str =
    "check `ORCHESTRA_API_KEY` or `--api-key-file`, and that the key may read these workflows";

/// When every error says the API could not be reached: the exit code of that failure class
/// (refused, DNS or TLS; mixed classes are [`exit::UNREACHABLE`]) and a hint naming the host.
pub(super) fn unreachable(errors: &[&ApiError]) -> Option<(i32, String)> {
    let mut found: Option<(TransportKind, &str)> = None;
    for error in errors {
        let ApiError::Transport { kind, url, .. } = error else {
            return None;
        };
        if !kind.is_unreachable() {
            return None;
        }
        found = match found {
            Some((seen, _)) if seen != *kind => Some((TransportKind::Connect, url)),
            _ => Some((*kind, url)),
        };
    }
    let (kind, url) = found?;
    let url = url::Url::parse(url).ok();
    let host = url.as_ref().and_then(Url::host_str).unwrap_or("?");
    let port = url.as_ref().and_then(Url::port_or_known_default);
    let authority = port.map_or_else(|| host.to_owned(), |p| format!("{host}:{p}"));
    Some(match kind {
        TransportKind::Dns => (
            exit::DNS,
            format!(
                "the host `{host}` does not resolve: check the host name in `--base-url`, and DNS or proxy settings"
            ),
        ),
        TransportKind::Tls => (
            exit::TLS,
            format!(
                "no TLS session with `{authority}`: check the `--base-url` scheme (`https` to a plain-HTTP server fails), proxies, and the server's certificate"
            ),
        ),
        _ => (
            exit::UNREACHABLE,
            format!(
                "check `--base-url` and the network: nothing accepted a connection at `{authority}`"
            ),
        ),
    })
}

pub(super) fn exit_code(summary: &ExportSummary) -> i32 {
    let errors: Vec<_> = summary.failed().filter_map(|w| w.error.as_ref()).collect();
    if errors.is_empty() {
        return exit::SUCCESS;
    }
    let interrupted = |e: &&ExtractError| {
        matches!(
            e,
            ExtractError::Cancelled {
                reason: StopReason::Interrupted
            }
        )
    };
    if errors.iter().any(interrupted) {
        return exit::INTERRUPTED;
    }
    let api_errors: Vec<_> = errors.iter().filter_map(|e| e.api_error()).collect();
    if api_errors
        .iter()
        .any(|e| matches!(e, ApiError::Unauthorized { .. }))
    {
        shout!("hint: {AUTH_HINT}");
        return exit::AUTH;
    }
    if summary.runs() == 0
        && api_errors.len() == errors.len()
        && let Some((code, hint)) = unreachable(&api_errors)
    {
        shout!("hint: {hint}");
        return code;
    }
    exit::PARTIAL_FAILURE
}
