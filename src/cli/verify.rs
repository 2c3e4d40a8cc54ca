//! `verify`: runs a verification and turns its result into output (a table or JSON on stdout,
//! one `error:` line per workflow that differs or could not be read on stderr) and an exit code.

use crate::config::ExportInputs;
use crate::exit;
use crate::extract::{ExtractError, StopReason, Stopper};
use crate::verify::{self, Verification, VerifyError, render};

use super::args::VerifyArgs;
use super::export::{
    AUTH_HINT, api_inputs, failure_code, privacy_inputs, report_failure, stop_on_signals,
    unreachable,
};
use super::{Ui, reporter_for, usage_error};

/// What to do about a dataset that differs.
const DIFFERS_HINT: &str = "runs that arrived or finished since the last export show up until the next one; `orchestra-export export --full` with the same flags brings the dataset in line and marks runs deleted upstream";

pub(super) async fn run_verify(args: VerifyArgs, ui: Ui) -> i32 {
    let json = args.json;
    let (inputs, file) = match api_inputs(args.api, &args.tuning, args.out) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    // Every history is read to its end; steps are not compared. `verify` stores nothing, so
    // hashed paths are only withheld from what it prints, like dropped ones: no key is needed.
    let inputs = privacy_inputs(args.privacy, &file, inputs);
    let mut privacy = inputs.privacy.clone();
    privacy.drop.append(&mut privacy.hash);
    let inputs = ExportInputs {
        full: true,
        with_steps: false,
        privacy,
        hash_key_file: None,
        hash_key_env: None,
        ..inputs
    };
    let config = match inputs.validate() {
        Ok(config) => config,
        Err(e) => return usage_error(&e),
    };
    let shown = crate::dataset::shown_url(&config.out.to_string_lossy());
    let stopper = Stopper::default();
    let reporter = reporter_for(ui, "verify");
    let watcher = stop_on_signals(
        &stopper,
        "interrupted: stopping (interrupt again to quit at once)",
        reporter.clone(),
    );
    let result = verify::verify(config, reporter.clone(), stopper).await;
    reporter.on_done();
    watcher.abort();
    match result {
        Ok(v) => finish(&v, &shown, json),
        Err(e) => fail(&e),
    }
}

fn finish(v: &Verification, shown: &str, json: bool) -> i32 {
    if json {
        say!("{}", render::json(v, shown));
    } else {
        say_raw!("{}", render::table(v, shown));
    }
    for w in v.differing() {
        shout!(
            "error: workflow `{}` differs from the API: {}",
            w.workflow_id,
            render::differences(w)
        );
    }
    for (id, error) in &v.failures {
        shout!(
            "error: workflow `{id}` could not be verified: {}",
            crate::error_chain(error)
        );
    }
    if !v.failures.is_empty() {
        return failures_code(&v.failures);
    }
    if v.differing().next().is_some() {
        shout!("hint: {DIFFERS_HINT}");
        return exit::DIFFERS;
    }
    exit::SUCCESS
}

/// The exit code when workflows could not be read: as for an export that failed them.
fn failures_code(failures: &[(String, ExtractError)]) -> i32 {
    let interrupted = |e: &ExtractError| {
        matches!(
            e,
            ExtractError::Cancelled {
                reason: StopReason::Interrupted
            }
        )
    };
    if failures.iter().any(|(_, e)| interrupted(e)) {
        return exit::INTERRUPTED;
    }
    let api_errors: Vec<_> = failures.iter().filter_map(|(_, e)| e.api_error()).collect();
    if api_errors
        .iter()
        .any(|e| matches!(e, crate::api::ApiError::Unauthorized { .. }))
    {
        shout!("hint: {AUTH_HINT}");
        return exit::AUTH;
    }
    if api_errors.len() == failures.len()
        && let Some((code, hint)) = unreachable(&api_errors)
    {
        shout!("hint: {hint}");
        return code;
    }
    exit::PARTIAL_FAILURE
}

fn fail(e: &VerifyError) -> i32 {
    let (code, hint) = match e {
        VerifyError::Api(export) => failure_code(export),
        VerifyError::Dataset(dataset) => (exit::OUTPUT, dataset.hint()),
        VerifyError::NoDataset { .. } => (
            exit::USAGE,
            Some("pass `--out`, the folder or object store URL the exports write".to_owned()),
        ),
        VerifyError::CollectorFailed => (exit::INTERNAL, None),
    };
    report_failure(e, code, hint.as_deref());
    code
}
