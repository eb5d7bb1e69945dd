//! The Dockerfile and the systemd unit are linted here (no Docker on CI): the instructions a
//! production image needs are present, and every `RELIST_*` variable they set is one
//! `relist serve` reads, so a renamed flag cannot leave them silently ignored.
use clap::CommandFactory;

fn read(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The environment variables `relist serve` reads.
fn serve_env() -> Vec<String> {
    let cli = relist::cli::Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve command");
    serve
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// `RELIST_*` names assigned (`RELIST_X=`) on the lines of `text` that are not comments.
fn assigned(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for (at, _) in line.match_indices("RELIST_") {
            let rest = &line[at..];
            let len = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            if rest[len..].starts_with('=') {
                names.push(rest[..len].to_string());
            }
        }
    }
    names
}

/// The instructions of a Dockerfile, continuation lines joined.
fn instructions(d: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in d.lines().filter(|l| !l.trim_start().starts_with('#')) {
        match line.trim_end().strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(line);
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_with_a_volume_and_a_health_check() {
    let d = read("Dockerfile");
    let all = instructions(&d);
    let instr = |word: &str| {
        all.iter()
            .filter(|l| l.split_whitespace().next() == Some(word))
            .collect::<Vec<_>>()
    };
    assert!(instr("FROM").len() >= 2, "multi-stage: a build and a run stage");
    assert!(
        instr("COPY").iter().any(|l| l.contains("--from=build")),
        "the run stage copies the binary only"
    );
    let user = instr("USER");
    assert!(
        !user.is_empty() && user.iter().all(|l| !l.contains("root")),
        "runs as a non-root user: {user:?}"
    );
    assert!(instr("VOLUME").iter().any(|l| l.contains("/var/lib/relist")));
    assert!(instr("HEALTHCHECK").iter().any(|l| l.contains("CMD")));
    assert!(instr("EXPOSE").iter().any(|l| l.contains("50051")));
    let env = serve_env();
    let set = assigned(&d);
    assert!(set.len() >= 3, "{set:?}");
    for name in set {
        assert!(
            env.contains(&name),
            "the Dockerfile sets {name}, which relist serve does not read"
        );
    }
}

#[test]
fn the_systemd_unit_runs_serve_with_a_state_directory_and_real_settings() {
    let u = read("packaging/relist.service");
    for key in [
        "[Unit]",
        "[Service]",
        "[Install]",
        "ExecStart=/usr/local/bin/relist serve",
        "StateDirectory=relist",
    ] {
        assert!(u.contains(key), "relist.service lacks {key}");
    }
    assert!(
        u.contains("DynamicUser=yes") || u.contains("User="),
        "runs as a non-root user"
    );
    let env = serve_env();
    let set = assigned(&u);
    assert!(!set.is_empty());
    for name in set {
        assert!(
            env.contains(&name),
            "relist.service sets {name}, which relist serve does not read"
        );
    }
}
