use clap::Parser;
use rum::cli::Cli;
use rum::output::Reporter;
use tracing_subscriber::filter::LevelFilter;

fn main() {
    // A shell asking for completions (`COMPLETE=bash rum …`) gets them here.
    rum::commands::complete_if_asked();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let reporter = Reporter::new(cli.output);
    let status = match rum::commands::run(&cli, &reporter) {
        Ok(status) => status,
        Err(error) => {
            let status = error.exit_status();
            reporter.error(&error, status.code());
            status
        }
    };
    std::process::exit(status.code());
}

/// Debug logs go to stderr, apart from command output; `-v` wins over RUM_LOG.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => std::env::var("RUM_LOG")
            .ok()
            .and_then(|v| v.parse::<LevelFilter>().ok())
            .unwrap_or(LevelFilter::WARN),
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
