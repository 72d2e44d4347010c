// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = orch::Cli::parse();
    match orch::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line: configuration errors already name the variable and the problem.
            eprintln!("orch: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
