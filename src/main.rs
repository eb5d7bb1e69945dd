fn main() -> std::process::ExitCode {
    match relist::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relist: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
