use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = twinsite::cli::Cli::parse();
    twinsite::commands::init_logging(&cli.log);
    match twinsite::commands::dispatch(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain: file, object, field, cause.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
