use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = twinsite::cli::Cli::parse();
    let ran = twinsite::commands::init_logging(&cli.log).and_then(|()| cli.command.run());
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain: file, object, field, cause.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
