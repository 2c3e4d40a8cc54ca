//! `demo` and `simulate`: the built-in simulator, alone or exported from in one command.

use std::net::SocketAddr;
use std::time::Duration;

use super::args::{DemoArgs, SimulateArgs};
use super::export::{export_inputs, export_until_signalled, finish_export};
use super::report::write_report;
use super::{Ui, report_error, summary};
use crate::config::{self, ConfigFile, ExportConfig, ExportInputs};
use crate::dataset::Location;
use crate::exit;
use crate::report::{self, ReportOptions};
use crate::simulate::{self, SimConfig, SimServer};

pub(super) async fn run_demo(args: DemoArgs, ui: Ui) -> i32 {
    if Location::is_url(&args.out) {
        shout!(
            "error: `demo` writes to a local folder, not to `{}`; `export --out URL` writes to object storage",
            crate::dataset::shown_url(&args.out.to_string_lossy())
        );
        return exit::USAGE;
    }
    let sim_config = SimConfig {
        seed: args.seed,
        workflows: args.workflows,
        runs_per_workflow: args.runs,
        vary_runs: true,
        profile: args.data,
        ..SimConfig::default()
    };
    let server = match SimServer::start(sim_config, SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(server) => server,
        Err(e) => {
            report_error(&e, Some("the demo needs a free port on 127.0.0.1"));
            return exit::INTERNAL;
        }
    };
    if let Err(e) = prepare_demo_out(&args.out) {
        report_error(&e, Some("pass another `--out`, or remove the folder"));
        return exit::OUTPUT;
    }
    say!(
        "simulator: serving {} workflows at {}",
        args.workflows,
        server.base_url()
    );
    let inputs = ExportInputs {
        base_url: server.base_url(),
        api_key_env: Some(simulate::DEFAULT_SIM_KEY.to_owned()),
        all_workflows: true,
        with_steps: true,
        ..export_inputs(&args.tuning, &ConfigFile::default(), Some(args.out))
    };
    let config: ExportConfig = match inputs.validate() {
        Ok(config) => config,
        Err(e) => {
            report_error(&e, None);
            return exit::USAGE;
        }
    };
    let out = config.out.clone();
    let code = finish_export(export_until_signalled(config, ui, None).await, &out, ui);
    if code == exit::SUCCESS {
        let code = write_report(
            &ReportOptions {
                data: out.clone(),
                out: out.join(report::REPORTS_DIR),
                since: None,
                until: None,
                workflows: Vec::new(),
                top_n: report::DEFAULT_TOP_N,
                price_per_million_tokens: None,
                source: None,
            },
            ui,
        );
        if code != exit::SUCCESS {
            return code;
        }
        say_raw!("{}", summary::query_help(&out));
    }
    server.stop();
    code
}

/// Marks a folder the demo wrote, so a later demo may replace it.
pub(super) const DEMO_MARKER: &str = "_demo";

/// The demo writes a fresh dataset each time: into a new or empty folder, or over an earlier
/// demo's output (its tables are removed first). Any other folder is left alone.
pub(super) fn prepare_demo_out(out: &std::path::Path) -> std::io::Result<()> {
    let is_empty = |p: &std::path::Path| std::fs::read_dir(p).map(|mut d| d.next().is_none());
    if out.exists() && !out.join(DEMO_MARKER).exists() && !is_empty(out)? {
        return Err(std::io::Error::other(format!(
            "`{}` is not empty and was not written by `demo`; it is left untouched",
            out.display()
        )));
    }
    if out.join(DEMO_MARKER).exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(DEMO_MARKER),
        "written by `orchestra-export demo`; a later demo replaces this folder\n",
    )
}

pub(super) async fn run_simulate(args: SimulateArgs) -> i32 {
    let api_key =
        std::env::var(config::API_KEY_ENV).unwrap_or_else(|_| simulate::DEFAULT_SIM_KEY.to_owned());
    let using_default = api_key == simulate::DEFAULT_SIM_KEY;
    let sim_config = SimConfig {
        seed: args.seed,
        workflows: args.workflows,
        runs_per_workflow: args.runs,
        vary_runs: args.vary_runs,
        page_cap: args.page_cap,
        api_key,
        latency: Duration::from_millis(args.latency_ms),
        faults: args.faults,
        rate_limit: args.rate_limit.map(|per_second| simulate::RateLimit {
            per_second,
            burst: per_second.max(1.0),
            http_date: false,
        }),
        drift: args.drift,
        aligned_offsets: args.aligned_offsets,
        profile: args.data,
        ..SimConfig::default()
    };
    let server = match SimServer::start(sim_config, args.listen).await {
        Ok(server) => server,
        Err(e) => {
            shout!("error: cannot listen on `{}`: {e}", args.listen);
            return exit::USAGE;
        }
    };
    say!(
        "simulator: serving {} workflows at {}",
        args.workflows,
        server.base_url()
    );
    if using_default {
        say!(
            "simulator: accepting the key `{}` (set ORCHESTRA_API_KEY to choose another)",
            simulate::DEFAULT_SIM_KEY
        );
    } else {
        say!("simulator: accepting the key from ORCHESTRA_API_KEY");
    }
    let _ = tokio::signal::ctrl_c().await;
    server.stop();
    exit::SUCCESS
}
