//! The `relist` binary: tunes the allocator, then runs the command line ([`relist::cli`]).

use clap::Parser;
use relist::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    keep_freed_buffers();
    let cli = Cli::parse();
    // Not for the daemon: it writes to clients' sockets, and with SIGPIPE's default action a
    // client hanging up mid-answer would kill it (Rust's runtime ignores SIGPIPE, so the
    // write fails with EPIPE and only that connection ends).
    if !matches!(cli.command, Command::Serve(_)) {
        die_quietly_on_closed_pipe();
    }
    match relist::cli::run(cli) {
        Ok(status) => std::process::ExitCode::from(status),
        Err(e) => {
            eprintln!("relist: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Restores the default SIGPIPE action, which Rust's runtime sets to ignore: `relist ... |
/// head` then ends quietly when head stops reading, as Unix tools do, instead of println!
/// panicking on EPIPE (exit 101).
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: only resets a signal disposition, before any other thread exists (the command
    // line is parsed, no runtime is started).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Lets glibc's allocator keep freed buffers of up to 8 MiB for reuse, in one arena per core
/// (glibc's default is eight per core). Checking a photo allocates and frees a few MiB of
/// pixel planes (decoded pixels, luma, grey levels, filter scratch); with glibc's defaults
/// each plane over 128 KiB-32 MiB is a fresh mapping that the kernel zeroes page by page
/// through faults, then unmaps. Measured on the JPEG batch benchmark: 302-312 -> 330-340
/// listings/s with 32 MiB / 64 MiB thresholds and glibc's default arenas, but then the soak
/// test saw RSS creep while nothing was stored (226 -> 249 MiB: every new thread's arena kept
/// its own 64 MiB); with these settings (two arenas on the 2-core VM measured) 371-376
/// listings/s and the soak's read-only phase flat (213 -> 217 MiB). A photo's planes are at
/// most ~3 MiB (1000x750 f32); larger buffers are still mapped and returned at once.
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 64) as libc::c_int;
        // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
