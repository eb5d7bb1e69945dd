//! What a new user runs into first (issue 17): the address the daemon logs works as `--addr`,
//! a failed connection is one line with a hint, `... | head` ends quietly, the license file
//! matches Cargo.toml.
use crate::common::{relist_cli, Daemon};

/// The one error line a failed client command printed (tracing output aside); fails unless
/// the command failed with exactly one.
fn one_error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap_or("")
        .lines()
        .filter(|l| l.starts_with("relist:"))
        .collect();
    assert_eq!(lines.len(), 1, "not one error line: {lines:?}");
    lines[0].to_string()
}

fn get_takedown(addr: &str) -> std::process::Output {
    relist_cli(&["takedown", "get", "1", "--addr", addr, "--json"])
}

#[test]
fn host_port_address_and_one_line_connection_errors_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::serve(&tmp.path().join("data"), &[]);
    // The bare host:port of the "relist serving" line reaches the daemon: an unknown id is
    // NotFound, not an address error.
    let out = get_takedown(&d.addr);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NotFound"), "host:port did not reach the daemon: {err}");

    // A closed port: one line, the cause once, and what to do.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let line = one_error_line(&get_takedown(&format!("127.0.0.1:{port}"))).to_lowercase();
    assert_eq!(line.matches("refused").count(), 1, "the cause repeats: {line}");
    assert!(line.contains("is `relist serve` running"), "no hint: {line}");

    // https against the plaintext daemon: one line that says so.
    let line = one_error_line(&get_takedown(&format!("https://{}", d.addr)));
    assert!(line.contains("may serve plaintext"), "no TLS hint: {line}");
}

#[test]
fn the_web_port_as_addr_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let web = Daemon::start(
        [
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
        "relist web page serving",
    );
    let line = one_error_line(&get_takedown(&web.addr));
    assert!(line.contains("is it the --http web port?"), "no hint: {line}");
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let made = relist_cli(&[
        "keys",
        "create",
        "--role",
        "admin",
        "--name",
        "ops",
        "--data-dir",
        data_s,
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // The reader goes away before the command writes, as `| head` does once it has its lines.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relist"))
        .args(["keys", "list", "--json", "--data-dir", data_s])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "panicked on a closed pipe: {err}");
    assert_ne!(out.status.code(), Some(101));
    assert!(
        out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
        "{:?}: {err}",
        out.status
    );
}

#[test]
fn the_license_file_is_the_license_cargo_toml_names() {
    let root = env!("CARGO_MANIFEST_DIR");
    let manifest = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    assert!(
        manifest.contains("license = \"Apache-2.0\""),
        "Cargo.toml names another license"
    );
    let license = std::fs::read_to_string(format!("{root}/LICENSE")).expect("LICENSE at the root");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(license.contains("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
}

#[test]
fn listen_takes_a_host_name_and_check_exits_with_its_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::start(
        [
            "--listen".as_ref(),
            "localhost:0".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
        "relist serving",
    );
    let title = "tas kulit buaya asli import";
    d.cli(&[
        "takedown",
        "add",
        "--marketplace",
        "shopee",
        "--listing-id",
        "1",
        "--title",
        title,
        "--reason",
        "wildlife",
    ]);
    let check = |id: &str, title: &str, code: i32| {
        d.cli_exit(
            &[
                "check",
                "--marketplace",
                "tokopedia",
                "--listing-id",
                id,
                "--title",
                title,
            ],
            code,
        )
    };
    // A title alone is never more than REVIEW: exit 3.
    assert_eq!(check("2", title, 3)["verdict"], "REVIEW");
    assert_eq!(check("3", "sepatu lari anak", 0)["verdict"], "CLEAR");
    // history takes --json like every client command: one JSON object a line, the REVIEW only.
    let out = relist_cli(&["history", "--json", "--addr", &d.addr]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["verdict"], "REVIEW", "{rows:?}");
    // A failed check is 1, distinct from every verdict.
    let out = relist_cli(&["check", "--marketplace", "", "--listing-id", "4", "--addr", &d.addr]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every flag and argument of every command, with the commands that lack help text.
#[test]
fn every_flag_of_every_command_has_help_text() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} --{}", arg.get_long().unwrap_or(id)));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(format!("{path} {} (the command)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&relist::cli::Cli::command(), "relist", &mut missing);
    assert!(missing.is_empty(), "without help text:\n{}", missing.join("\n"));
}
