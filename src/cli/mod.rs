//! CLI: flags (clap), turned once into validated config; runs a command and maps the outcome to
//! an exit code and messages (`error: …`, `caused by: …`, `hint: …` on stderr; results on stdout).
//! Bad input (exit 2) and an unreachable API (exits 5, 7, 8) are one `error:` line naming the
//! flag, key, file or URL. Flag bounds live here; clap's own errors name the flag.

mod bars;
mod summary;

/// `println!` to stdout that ignores a closed pipe (`orchestra-export … | head`): the summary
/// is a courtesy, and the export it describes is already committed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stdout(), "{}", $crate::terminal::safe(&text));
    }};
}

/// `print!` to stdout that ignores a closed pipe.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = write!(std::io::stdout(), "{}", $crate::terminal::safe(&text));
    }};
}

/// `eprintln!` with control characters escaped ([`crate::terminal::safe`]): error lines carry
/// workflow ids, paths and API messages.
macro_rules! shout {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        eprintln!("{}", $crate::terminal::safe(&text));
    }};
}

mod args;
mod demo;
mod export;
mod maintain;
mod report;
mod verify;

use std::io::IsTerminal;
use std::sync::Arc;

use clap::Parser;

use crate::exit;
use crate::progress::{LogReporter, Reporter};
use args::{Cli, Command, LogFormat};

/// How a command talks to the person or scheduler running it.
#[derive(Debug, Clone, Copy)]
struct Ui {
    /// Progress bars (a terminal, text logs, not `--no-progress` or `--quiet`).
    bars: bool,
    /// Logs are JSON lines for a scheduler.
    json_logs: bool,
    /// `--quiet`: errors and warnings only; no progress, no summary.
    quiet: bool,
}

/// Parses the command line, runs it, and returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.log_format, cli.verbose, cli.quiet);
    crate::dataset::share_files(cli.shared_files);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report_error(&e, None);
            return exit::INTERNAL;
        }
    };
    let json_logs = matches!(cli.log_format, LogFormat::Json);
    let ui = Ui {
        bars: !cli.no_progress && !cli.quiet && !json_logs && std::io::stderr().is_terminal(),
        json_logs,
        quiet: cli.quiet,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Export(args) => export::run_export(args, ui).await,
            Command::Demo(args) => demo::run_demo(args, ui).await,
            Command::Simulate(args) => demo::run_simulate(args).await,
            Command::Report(args) => report::run_report(args, ui),
            Command::Verify(args) => verify::run_verify(args, ui).await,
            Command::Maintain(args) => maintain::run_maintain(args),
        }
    })
}

fn init_logging(format: LogFormat, verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if quiet => "warn",
        0 => "warn,extract=info",
        1 => "debug,hyper=info,reqwest=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || crate::terminal::SafeWriter::new(std::io::stderr(), ansi))
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn reporter(ui: Ui) -> Arc<dyn Reporter> {
    reporter_for(ui, "export")
}

/// Progress of `command`: bars on a terminal, log lines otherwise.
fn reporter_for(ui: Ui, command: &'static str) -> Arc<dyn Reporter> {
    if ui.bars {
        Arc::new(bars::BarReporter::new())
    } else {
        Arc::new(LogReporter {
            command,
            failures: ui.json_logs,
        })
    }
}

/// Prints a bad command line, config or input file as one `error: …` line (causes joined by
/// `: `) naming the flag, key or file, and returns [`exit::USAGE`].
fn usage_error(error: &dyn std::error::Error) -> i32 {
    shout!("error: {}", crate::error_chain(error));
    exit::USAGE
}

/// Prints `error: …`, a `caused by: …` line per cause, and an optional `hint: …`.
pub fn report_error(error: &dyn std::error::Error, hint: Option<&str>) {
    shout!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        shout!("  caused by: {cause}");
        source = cause.source();
    }
    if let Some(hint) = hint {
        shout!("hint: {hint}");
    }
}
